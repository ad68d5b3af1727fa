"""CIFAR-100 from a user directory: generated files in the python-pickle layout, and every
malformed variant ends in one DataError naming the file or the expected layout."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from advgeom.data import load
from advgeom.errors import DataError


def _write(directory, *, n_train=30, n_test=10, seed=0, meta=True, bytes_keys=False):
    """train, test (and meta) as cifar-100-python.tar.gz holds them; returns the raw arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, size=n), rng.integers(0, 20, size=n)
        keys = ("data", "fine_labels", "coarse_labels", "filenames")
        batch = dict(zip(keys, (data, [int(v) for v in fine], [int(v) for v in coarse], [b"x.png"] * n)))
        if bytes_keys:
            batch = {k.encode(): v for k, v in batch.items()}
        (directory / split).write_bytes(pickle.dumps(batch, protocol=4))
        out[split] = (data, fine, coarse)
    if meta:
        names = {"fine_label_names": [f"fine{i}" for i in range(100)],
                 "coarse_label_names": [f"coarse{i}" for i in range(20)]}
        (directory / "meta").write_bytes(pickle.dumps(names, protocol=4))
    return out


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_fine_and_coarse_labels_from_the_standard_layout(tmp_path, bytes_keys):
    raw = _write(tmp_path / "d" / "cifar100" / "cifar-100-python", bytes_keys=bytes_keys)
    with pytest.warns(UserWarning, match="50000"):
        train = load("cifar100", "train", root=tmp_path / "d")
    assert train.images.shape == (30, 3, 32, 32) and train.num_classes == 100
    assert torch.equal(train.images, torch.from_numpy(raw["train"][0]).view(-1, 3, 32, 32).float() / 255)
    assert torch.equal(train.labels, torch.from_numpy(raw["train"][1]).long())
    assert train.classes[7] == "fine7"
    with pytest.warns(UserWarning, match="10000"):
        test = load("cifar100", "test", root=tmp_path / "d", labels="coarse")
    assert test.num_classes == 20 and torch.equal(test.labels, torch.from_numpy(raw["test"][2]).long())


def test_files_directly_env_var_classes_and_no_meta(tmp_path, monkeypatch):
    raw = _write(tmp_path / "env", meta=False)
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    with pytest.warns(UserWarning):
        d = load("cifar100", classes=(3, 5))
    y = torch.from_numpy(raw["train"][1]).long()
    keep = (y == 3) | (y == 5)
    assert d.classes == ("3", "5") and torch.equal(d.labels, (y[keep] == 5).long())


@pytest.mark.parametrize("damage,match", [
    (lambda d: (d / "test").unlink(), "holds the other split but not test"),
    (lambda d: (d / "test").write_bytes(pickle.dumps([1, 2])), "not a CIFAR batch"),
    (lambda d: (d / "test").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8),
                                                      "labels": [0, 1]})), "lacks key"),
    (lambda d: (d / "test").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8),
                                                      "fine_labels": [0, 1]})), "uint8 N x 3072"),
    (lambda d: (d / "test").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8),
                                                      "fine_labels": [0, 100]})), "labels out of range"),
    (lambda d: (d / "test").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8),
                                                      "fine_labels": [0]})), "label count mismatch"),
    (lambda d: (d / "test").write_bytes(b"not a pickle"), "pickle"),
    (lambda d: (d / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a"]})), "meta lacks 100"),
])
def test_malformed_files_are_one_clear_error(tmp_path, damage, match):
    root = tmp_path / "c"
    _write(root)
    damage(root)
    with pytest.raises(DataError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the sizes of the files that do load are not standard
        load("cifar100", "test", root=root)


def test_nothing_found_names_the_layout_and_bad_labels_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVGEOM_DATA", raising=False)
    with pytest.raises(DataError, match="does not download CIFAR-100: expected cifar-100-python/train"):
        load("cifar100", root=tmp_path / "empty")
    with pytest.raises(DataError, match="'fine' or 'coarse'"):
        load("cifar100", root=tmp_path, labels="medium")
