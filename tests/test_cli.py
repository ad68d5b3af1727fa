"""The CLI end to end on a tiny config: list, train (cache), results, errors as one line."""
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from advgeom.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("kind,expect", [
    ("models", ["hyper_mnist_cnn", "hyper_cifar_cnn", "cw_mnist_cnn", "nielsen_cnn4", "fc2", "cnn7",
                "relu_mlp", "quadratic_net", "wrn", "resnet32"]),
    ("datasets", ["mnist", "fashion-mnist", "cifar10", "spheres"]),
    ("attacks", ["fgsm", "pgd"]), ("defenses", ["ce"]), ("experiments", ["demo"])])
def test_list(kind, expect):
    out = _run("list", kind)
    assert out.exit_code == 0, out.output
    names = {line.split()[0] for line in out.output.splitlines() if line.strip()}
    assert set(expect) <= names


def test_train_then_cached_then_results(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "spheres"\nmodel = "relu_mlp"\nobjective = "bce"\n'
                   'iterations = 4\nbatch_size = 8\ncheckpoint_every = 2\n'
                   '[dataset_kwargs]\nd = 4\nn = 32\n[model_kwargs]\ninput_dim = 4\nwidth = 8\n')
    out = _run("train", "--config", cfg, "--root", tmp_path / "runs", "--no-progress", "lr=0.01")
    assert out.exit_code == 0, out.output
    # the header names the resolved device, then what will happen before it happens
    lines = out.output.splitlines()
    assert lines[0] == "device: cpu (auto)" or torch.cuda.is_available()
    assert lines[1].startswith("will train relu_mlp [") and lines[1].endswith(
        ": 4 steps (no earlier run of it recorded)")
    assert lines[2].startswith("trained: relu_mlp")
    again = _run("train", "--config", cfg, "--root", tmp_path / "runs", "--no-progress", "lr=0.01")
    assert again.output.splitlines()[1].startswith("cached: relu_mlp")
    missing = _run("results", "--db", tmp_path / "none.sqlite")
    assert missing.exit_code == 2 and "no results database" in missing.output


@pytest.mark.parametrize("args,msg", [
    (["train", "--no-progress", "lrr=0.1"], "did you mean 'lr'"),
    (["train", "--no-progress", "model=\"nope\"", "iterations=1"], "unknown model 'nope'"),
    (["train", "--config", "/nonexistent.toml"], "config file not found"),
    (["reproduce", "nope"], "unknown experiment 'nope'"),
    (["reproduce", "demo", "--profile", "fast"], "has no profile"),
    # issue 29: a device this machine lacks is one line before anything uses it
    pytest.param(["reproduce", "demo", "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    pytest.param(["evaluate", "--checkpoint", "m.safetensors", "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["evaluate", "--checkpoint", "m.safetensors", "--device", "nope"], "unknown device"),
    (["reproduce", "demo", "--device", "cuda:99"], "CUDA"),
])
def test_errors_are_one_line(tmp_path, args, msg):
    out = _run(*args[:1], *(["--root", tmp_path] if args[0] in ("train", "reproduce") else []), *args[1:])
    assert out.exit_code == 2, out.output
    assert msg in out.output and "Traceback" not in out.output
    assert out.output.strip().count("\n") == 0


def test_help_everywhere():
    for cmd in ([], ["list"], ["train"], ["reproduce"], ["results"], ["evaluate"]):
        out = _run(*cmd, "--help")
        assert out.exit_code == 0 and "Usage" in out.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "advgeom.cli", "list", "defenses"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "ce" in out.stdout


def test_list_experiments_shows_each_experiments_profiles():
    from advgeom.registry import get, names

    out = _run("list", "experiments")
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.strip()}
    for name in names("experiment"):
        assert f"[{', '.join(get('experiment', name).profiles)}]" in lines[name]


def test_a_profile_the_experiment_lacks_is_one_line_and_exit_2(tmp_path):
    out = _run("reproduce", "demo", "--profile", "cpu", "--root", tmp_path)
    assert out.exit_code == 2
    assert out.output.strip() == "error: experiment 'demo' has no profile 'cpu'; its profiles: quick, paper"
    assert not (tmp_path / "results.sqlite").exists()
