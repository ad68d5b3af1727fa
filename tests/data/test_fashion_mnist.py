"""Fashion-MNIST: Debian's IDX files, user directories, downloads, the T-shirt vs Pullover task."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import advgeom.data.fashion_mnist as fashion_mod
from advgeom.data import load
from advgeom.data._files import Remote
from advgeom.errors import DataError

DEBIAN = fashion_mod.OFFLINE_DIRS[0]
needs_debian = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian dataset-fashion-mnist not installed")


@pytest.fixture(scope="module")
def real():
    return {split: load("fashion-mnist", split) for split in ("train", "test")}


@needs_debian
def test_offline_counts_range_dtype_balance(real):
    for split, n in (("train", 60000), ("test", 10000)):
        d = real[split]
        assert d.images.shape == (n, 1, 28, 28) and d.images.dtype == torch.float32
        assert d.labels.dtype == torch.int64
        assert float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0
        assert torch.equal(torch.bincount(d.labels, minlength=10), torch.full((10,), n // 10))  # balanced
        assert d.classes[0] == "T-shirt/top" and d.classes[2] == "Pullover" and d.num_classes == 10


@needs_debian
def test_tshirt_vs_pullover(real):
    by_index = load("fashion-mnist", "test", classes=(0, 2))
    by_name = load("fashion-mnist", "test", classes=("T-shirt/top", "Pullover"))
    full = real["test"]
    mask = (full.labels == 0) | (full.labels == 2)
    assert len(by_index) == 2000 and by_index.classes == ("T-shirt/top", "Pullover")
    assert torch.equal(by_index.images, full.images[mask]) and torch.equal(by_index.images, by_name.images)
    assert torch.equal(by_index.labels, (full.labels[mask] == 2).long())
    assert torch.equal(by_index.labels, by_name.labels)


@needs_debian
def test_val_split_disjoint(real):
    val = load("fashion-mnist", "val", val_size=500, val_seed=1, classes=(0, 2))
    train = load("fashion-mnist", "train", val_size=500, val_seed=1, classes=(0, 2))
    assert len(val) == 500 and len(train) == 12000 - 500
    flat = lambda d: {r.tobytes() for r in (d.images * 255).round().byte().flatten(1).numpy()}  # noqa: E731
    assert flat(val).isdisjoint(flat(train))


def test_env_directory_and_missing_offline(tmp_path, files, monkeypatch, no_offline):
    with pytest.raises(DataError) as exc:
        load("fashion-mnist")
    assert "no-debian-fashion-mnist" in str(exc.value) and "dataset-fashion-mnist" in str(exc.value)
    written = files.write_idx_set(tmp_path / "env" / "fashion-mnist", gz=True)
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    with pytest.warns(UserWarning):
        d = load("fashion-mnist", "train", classes=("Pullover", "T-shirt/top"))
    y = torch.from_numpy(written["train"][1]).long()
    keep = (y == 0) | (y == 2)
    assert torch.equal(d.labels, (y[keep] == 0).long())


def test_offline_dir_counts_are_strict(tmp_path, files, monkeypatch, no_offline):
    files.write_idx_set(tmp_path / "deb", gz=True)
    monkeypatch.setattr(fashion_mod, "OFFLINE_DIRS", (tmp_path / "deb",))
    with pytest.raises(DataError, match="standard split has 60000"):
        load("fashion-mnist")


def test_download(tmp_path, files, http_server, monkeypatch, no_offline):
    served, url, _ = http_server
    files.write_idx_set(served, gz=True, n_train=30, n_test=10)
    remotes = {p.name: Remote(p.name, files.sha256_bytes(p.read_bytes())) for p in served.iterdir()}
    spec = dataclasses.replace(fashion_mod.SPEC, mirrors=(url,), remotes=remotes, counts={"train": 30, "test": 10})
    monkeypatch.setattr(fashion_mod, "SPEC", spec)
    d = load("fashion-mnist", "test", download=True)
    assert len(d) == 10 and d.images.shape[1:] == (1, 28, 28)
    bad = {**remotes, "t10k-images-idx3-ubyte.gz": Remote("t10k-images-idx3-ubyte.gz", "1" * 64)}
    monkeypatch.setattr(fashion_mod, "SPEC", dataclasses.replace(spec, remotes=bad))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # the first download is cached
    with pytest.raises(DataError, match="sha256"):
        load("fashion-mnist", "test", root=tmp_path / "r", download=True)
    assert not (tmp_path / "r" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_checksum_table():
    assert len(fashion_mod.SPEC.remotes) == 4
    assert all(len(r.sha256) == 64 for r in fashion_mod.SPEC.remotes.values())
