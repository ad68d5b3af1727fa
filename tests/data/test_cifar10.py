"""CIFAR-10: python-pickle batches the tests write, the restricted unpickler, the tarball download."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import advgeom.data.cifar10 as cifar_mod
from advgeom.data import load
from advgeom.data._files import Remote
from advgeom.errors import DataError


def _as_images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data).view(-1, 3, 32, 32).float() / 255


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_root_batches(tmp_path, files, protocol):
    written = files.write_cifar_set(tmp_path / "c" / "cifar-10-batches-py", protocol=protocol)
    with pytest.warns(UserWarning, match="50000"):
        train = load("cifar10", "train", root=tmp_path / "c")
    assert train.images.shape == (60, 3, 32, 32) and train.images.dtype == torch.float32
    assert torch.equal(train.images, _as_images(written["train"][0]))
    assert torch.equal(train.labels, torch.from_numpy(written["train"][1]).long())
    assert train.classes[0] == "airplane" and train.num_classes == 10
    with pytest.warns(UserWarning):
        test = load("cifar10", "test", root=tmp_path / "c")
    assert torch.equal(test.images, _as_images(written["test"][0]))


def test_env_subdir_files_directly_and_classes(tmp_path, files, monkeypatch):
    written = files.write_cifar_set(tmp_path / "env" / "cifar10", per_batch=20)
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    with pytest.warns(UserWarning):
        d = load("cifar10", classes=("cat", "dog"))
        val = load("cifar10", "val", val_size=4, classes=("cat", "dog"))
    y = torch.from_numpy(written["train"][1]).long()
    keep = (y == 3) | (y == 5)
    assert d.classes == ("cat", "dog") and torch.equal(d.labels, (y[keep] == 5).long())
    assert torch.equal(d.images, _as_images(written["train"][0])[keep])
    assert len(val) == 4


def test_missing_batch_and_bad_batches(tmp_path, files):
    root = tmp_path / "c"
    files.write_cifar_set(root)
    os.remove(root / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3 missing"):
        load("cifar10", root=root)
    files.write_cifar_set(root)
    (root / "data_batch_2").write_bytes(files.evil_pickle(tmp_path / "pwned"))
    with pytest.raises(DataError, match="refused") as exc:
        load("cifar10", root=root)
    assert str(root / "data_batch_2") in str(exc.value) and not (tmp_path / "pwned").exists()
    files.write_cifar_set(root)
    import pickle
    (root / "test_batch").write_bytes(pickle.dumps({"labels": [1, 2]}))
    with pytest.raises(DataError, match="lacks key.*data") as exc:
        load("cifar10", "test", root=root)
    assert str(root / "test_batch") in str(exc.value)


def test_no_source_names_every_place(tmp_path, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "cifar-10-python.tar.gz").write_bytes(b"not checked yet")
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as exc:
        load("cifar10", "test")
    msg = str(exc.value)
    assert "\n" not in msg and "download=True" in msg and "is there" in msg
    for place in (tmp_path / "env" / "cifar10", tmp_path / "env", tmp_path / "xdg-cache" / "advgeom" / "cifar10"):
        assert str(place) in msg


def _serve_archive(served, files, tmp_path):
    batches = tmp_path / "src" / "cifar-10-batches-py"
    written = files.write_cifar_set(batches, per_batch=10, n_test=8)
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in batches.iterdir()}
    members["../escape"] = b"must not be extracted"
    archive = files.make_tar_gz(served / "cifar-10-python.tar.gz", members)
    return written, Remote(archive.name, files.sha256_bytes(archive.read_bytes()))


def test_download_extracts_verified_archive(tmp_path, files, http_server, monkeypatch):
    served, url, requests = http_server
    written, remote = _serve_archive(served, files, tmp_path)
    monkeypatch.setattr(cifar_mod, "MIRRORS", (url,))
    monkeypatch.setattr(cifar_mod, "ARCHIVE", remote)
    monkeypatch.setattr(cifar_mod, "COUNTS", {"train": 50, "test": 8})
    d = load("cifar10", "test", root=tmp_path / "dl", download=True)
    assert torch.equal(d.images, _as_images(written["test"][0]))
    out = tmp_path / "dl" / "cifar10"
    assert sorted(p.name for p in (out / "cifar-10-batches-py").iterdir()) == \
        sorted([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    assert not (tmp_path / "dl" / "escape").exists() and not (out / "escape").exists()
    assert len(load("cifar10", "train", root=tmp_path / "dl")) == 50  # now a user directory
    assert requests == ["/cifar-10-python.tar.gz"]


def test_download_wrong_checksum_keeps_nothing(tmp_path, files, http_server, monkeypatch):
    served, url, _ = http_server
    _, remote = _serve_archive(served, files, tmp_path)
    monkeypatch.setattr(cifar_mod, "MIRRORS", (url,))
    monkeypatch.setattr(cifar_mod, "ARCHIVE", Remote(remote.name, "f" * 64))
    with pytest.raises(DataError, match="sha256"):
        load("cifar10", download=True)
    cache = tmp_path / "xdg-cache" / "advgeom" / "cifar10"
    assert not cache.exists() or not any(cache.rglob("*"))


def test_checksum_constant():
    assert cifar_mod.ARCHIVE.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert cifar_mod.MIRRORS[0].startswith("https://")
