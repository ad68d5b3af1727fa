"""Issue 30, "The CLI": ``--device auto`` (the default) resolves once to CUDA, MPS or the
CPU and is printed in the run's header, an explicit device this machine lacks stays one
line; a run on ``auto`` that lands on the CPU has the keys of one on ``cpu``.
``--download`` reaches every loader that can download and is one line for a data set
that cannot (nothing here downloads: the loader is replaced by one that records)."""
import pytest
import torch

from advgeom import registry
from cli_helpers import run, spheres  # tests/cli/cli_helpers.py
from advgeom.config import config_hash
from advgeom.data.base import DOWNLOAD_ENV, TensorData, can_download
from advgeom.train import TrainConfig
from advgeom.types import resolve_device

SPHERES = spheres(2)
_run = run


def test_auto_resolves_to_cuda_then_mps_then_cpu(monkeypatch):
    mps = torch.backends.mps
    for cuda, has_mps, want in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda v=cuda: v)
        monkeypatch.setattr(mps, "is_available", lambda v=has_mps: v)
        assert resolve_device("auto") == want
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_explicit_missing_device_is_one_line(tmp_path):
    out = _run("train", *SPHERES, "--root", tmp_path, "--device", "cuda")
    assert out.exit_code == 2
    assert out.output == "error: device 'cuda': CUDA is not available on this machine\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="auto is the CPU only without CUDA and MPS")
def test_auto_on_the_cpu_is_the_cpu_run(tmp_path):
    """The default device resolves before anything is keyed: the run directory, config
    hash and cache of ``--device cpu`` serve ``--device auto`` (and the default) unchanged."""
    first = _run("train", *SPHERES, "--root", tmp_path, "--no-progress", "--device", "cpu")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == "device: cpu"
    for device in (["--device", "auto"], []):
        again = _run("train", *SPHERES, "--root", tmp_path, "--no-progress", *device)
        assert again.exit_code == 0, again.output
        lines = again.output.splitlines()
        assert lines[0] == "device: cpu (auto)" and lines[1].startswith("cached: relu_mlp")
    cfg = TrainConfig(dataset="spheres", model="relu_mlp", objective="bce", iterations=2, batch_size=8,
                      dataset_kwargs={"d": 4, "n": 32}, model_kwargs={"input_dim": 4, "width": 8})
    assert [p.name for p in (tmp_path / "train").iterdir()] == [f"relu_mlp-{config_hash(cfg)}"]


def test_which_data_sets_can_download():
    assert can_download("mnist") and can_download("fashion-mnist") and can_download("cifar10")
    assert not can_download("cifar100") and not can_download("spheres")


@pytest.fixture
def recording_mnist(monkeypatch):
    """``mnist`` replaced by a loader that records its ``download`` argument."""
    calls = []

    def fake(split="train", *, root=None, download=False, classes=None):
        calls.append(download)
        g = torch.Generator().manual_seed(0)
        return TensorData(torch.rand(16, 1, 28, 28, generator=g), torch.arange(16) % 10, 10, "mnist", split)

    monkeypatch.setitem(registry._REGISTRY["dataset"], "mnist", fake)
    monkeypatch.setenv(DOWNLOAD_ENV, "0")   # restored after the test (the CLI sets it to 1)
    return calls


MNIST = ['dataset="mnist"', 'model="fc2"', "model_kwargs.num_classes=10", "iterations=1", "batch_size=4"]


def test_download_reaches_the_loader(tmp_path, recording_mnist, monkeypatch):
    out = _run("train", *MNIST, "--root", tmp_path, "--no-progress", "--download")
    assert out.exit_code == 0, out.output
    assert recording_mnist and all(recording_mnist)
    monkeypatch.setenv(DOWNLOAD_ENV, "0")   # restored after the test (the CLI sets it to 1)
    recording_mnist.clear()
    out = _run("train", *MNIST, "--root", tmp_path / "other", "--no-progress")
    assert out.exit_code == 0, out.output
    assert recording_mnist and not any(recording_mnist)  # without --download nothing downloads


@pytest.mark.parametrize("args", [
    ["train", 'dataset="spheres"', 'model="relu_mlp"', 'objective="bce"', "iterations=1"],
    ["evaluate", "--experiment", "demo", "--dataset", "cifar100"],
])
def test_download_for_a_data_set_without_a_source_is_one_line(tmp_path, monkeypatch, args):
    monkeypatch.setenv(DOWNLOAD_ENV, "0")   # restored after the test (the CLI sets it to 1)
    out = _run(*args, "--root", tmp_path, "--download")
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: --download: data set ") and out.output.count("\n") == 1
    assert "has no download source" in out.output
    assert not any(tmp_path.iterdir())
