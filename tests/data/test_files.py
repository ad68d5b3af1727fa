"""The shared readers of advgeom.data._files: IDX, safe pickles, downloads, splits."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from advgeom.data import _files
from advgeom.data._files import (
    Remote, extract_members, fetch, load_pickle, read_cifar_batch, read_idx, read_idx_pair, select,
    sha256_file, user_dirs,
)
from advgeom.errors import DataError


def _one_line_naming(exc: pytest.ExceptionInfo, path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_idx_roundtrip_raw_and_gzip(tmp_path, files, name):
    x, _ = files.fake_digits(7, seed=1, shape=(5, 4))
    got = read_idx(files.write_idx(tmp_path / name, x))
    assert got.dtype == np.uint8 and got.shape == (7, 5, 4)
    np.testing.assert_array_equal(got, x)


def test_truncated_idx_is_one_line_error_naming_file(tmp_path, files):
    x, _ = files.fake_digits(10, seed=0)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(files.idx_bytes(x)[:-100])
    with pytest.raises(DataError, match="truncated") as exc:
        read_idx(path)
    _one_line_naming(exc, path)


def test_truncated_gzip_stream(tmp_path, files):
    x, _ = files.fake_digits(50, seed=0)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(files.idx_bytes(x))[:-2000])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    _one_line_naming(exc, path)


def test_bad_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 64)
    with pytest.raises(DataError, match="bad magic") as exc:
        read_idx(path)
    _one_line_naming(exc, path)


@pytest.mark.parametrize("payload", [b"this is not gzip at all", b"\x1f\x8b\x08\x00garbage-after-header"])
def test_bad_gzip(tmp_path, payload):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError) as exc:
        read_idx(path)
    _one_line_naming(exc, path)


def test_trailing_bytes_and_unsupported_type(tmp_path, files):
    x, _ = files.fake_digits(3, seed=0)
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(files.idx_bytes(x) + b"extra")
    with pytest.raises(DataError, match="trailing"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + b"\x00" * 16)  # float32 IDX
    with pytest.raises(DataError, match="unsupported"):
        read_idx(path)
    huge = b"\x00\x00\x08\x04" + b"\xff\xff\xff\xff" * 4  # 2**128 bytes claimed: no overflow
    path.write_bytes(huge)
    with pytest.raises(DataError, match="implausible"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_idx_pair_validation(tmp_path, files):
    x, y = files.fake_digits(20, seed=0)
    img, lab = tmp_path / "img-idx3-ubyte", tmp_path / "lab-idx1-ubyte"
    files.write_idx(img, x)
    files.write_idx(lab, y)
    got_x, got_y = read_idx_pair(img, lab)
    assert got_y.dtype == np.int64
    np.testing.assert_array_equal(got_y, y)

    files.write_idx(lab, y[:-1])
    with pytest.raises(DataError, match="label count mismatch") as exc:
        read_idx_pair(img, lab)
    _one_line_naming(exc, lab)

    bad = y.copy()
    bad[3] = 10
    files.write_idx(lab, bad)
    with pytest.raises(DataError, match="out of range") as exc:
        read_idx_pair(img, lab)
    _one_line_naming(exc, lab)

    files.write_idx(lab, y)
    files.write_idx(img, x[:, :, :27])  # wrong dims
    with pytest.raises(DataError, match="28 x 28") as exc:
        read_idx_pair(img, lab)
    _one_line_naming(exc, img)
    with pytest.raises(DataError, match="expected images") as exc:  # files swapped
        read_idx_pair(lab, img)
    _one_line_naming(exc, lab)
    with pytest.raises(DataError, match="1-D label"):
        read_idx_pair(img, img, image_shape=(28, 27))


# ------------------------------------------------------------------ safe pickles
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_pickle_reads_numpy_arrays(tmp_path, protocol):
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "x": np.linspace(0, 1, 5, dtype=np.float32),
           "labels": [1, 2, 3], "name": b"raw bytes", "t": ("a", 1.5)}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = load_pickle(path)
    np.testing.assert_array_equal(got["data"], obj["data"])
    np.testing.assert_array_equal(got["x"], obj["x"])
    assert got["labels"] == [1, 2, 3] and got["name"] == b"raw bytes" and got["t"] == ("a", 1.5)


def test_malicious_pickle_refused(tmp_path, files):
    marker = tmp_path / "pwned"
    for path in (tmp_path / "evil.pkl", tmp_path / "evil.pkl.gz"):
        data = files.evil_pickle(marker)
        path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
        with pytest.raises(DataError, match="refused") as exc:
            load_pickle(path)
        assert "os" in str(exc.value) or "posix" in str(exc.value)
        _one_line_naming(exc, path)
    assert not marker.exists()


class _Rot13:
    def __reduce__(self):
        import codecs
        return (codecs.encode, ("abc", "rot13"))


def test_pickle_global_whitelist_is_tight(tmp_path):
    for module, name in (("builtins", "eval"), ("numpy", "load"), ("numpy.core.multiarray", "scalar")):
        path = tmp_path / "g.pkl"
        path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
        with pytest.raises(DataError, match="refused"):
            load_pickle(path)
    # _codecs.encode is allowed only as the latin1 bytes constructor
    path = tmp_path / "codec.pkl"
    path.write_bytes(pickle.dumps(_Rot13()))
    with pytest.raises(DataError, match="refused.*latin1"):
        load_pickle(path)


def test_corrupted_pickle(tmp_path):
    path = tmp_path / "c.pkl"
    path.write_bytes(pickle.dumps({"data": np.zeros(100, np.uint8)}, protocol=4)[:-20])
    with pytest.raises(DataError) as exc:
        load_pickle(path)
    _one_line_naming(exc, path)


def test_cifar_batch_validation(tmp_path, files):
    path = tmp_path / "data_batch_1"
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    files.write_cifar_batch(path, data, [0, 1, 2, 9], bytes_keys=True)
    x, y = read_cifar_batch(path)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 1, 2, 9]
    assert x[2, 1, 5, 7] == data[2, 1024 + 5 * 32 + 7]  # channel-major rows of 32

    path.write_bytes(pickle.dumps({"data": data}))
    with pytest.raises(DataError, match="lacks key.*labels") as exc:
        read_cifar_batch(path)
    _one_line_naming(exc, path)
    for bad_data, labels, match in ((data.astype(np.float32), [0] * 4, "uint8"),
                                    (data[:, :100], [0] * 4, "3072"),
                                    (data, [0] * 3, "count mismatch"),
                                    (data, [0, 1, 2, 10], "out of range")):
        files.write_cifar_batch(path, bad_data, labels)
        with pytest.raises(DataError, match=match) as exc:
            read_cifar_batch(path)
        _one_line_naming(exc, path)


# ---------------------------------------------------------------------- download
def test_fetch_verifies_sha256(tmp_path, http_server):
    served, url, requests = http_server
    payload = b"some data file\n" * 100
    (served / "f.bin").write_bytes(payload)
    good = Remote("f.bin", _files.hashlib.sha256(payload).hexdigest(), len(payload))
    dest = tmp_path / "dl"

    wrong = Remote("f.bin", "0" * 64)
    with pytest.raises(DataError, match="sha256") as exc:
        fetch(wrong, [url], dest)
    assert "\n" not in str(exc.value)
    assert not (dest / "f.bin").exists() and not list(dest.iterdir())  # nothing kept

    got = fetch(good, [url + "missing/", url], dest)  # first mirror 404s, second serves
    assert got == dest / "f.bin" and got.read_bytes() == payload
    assert sha256_file(got) == good.sha256
    n = len(requests)
    fetch(good, ["http://127.0.0.1:9/unreachable/"], dest)  # already there: no request
    assert len(requests) == n

    too_big = Remote("f.bin", good.sha256, size=10)
    with pytest.raises(DataError, match="more than"):
        fetch(too_big, [url], tmp_path / "dl2")
    assert not list((tmp_path / "dl2").iterdir())


def test_fetch_file_url_and_bad_scheme(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "g.bin").write_bytes(b"abc")
    remote = Remote("g.bin", _files.hashlib.sha256(b"abc").hexdigest())
    assert fetch(remote, [src.as_uri()], tmp_path / "d").read_bytes() == b"abc"
    with pytest.raises(DataError, match="scheme"):
        fetch(remote, ["ftp://example.invalid/"], tmp_path / "e")


def test_extract_members_only_named_regular_files(tmp_path, files):
    archive = files.make_tar_gz(tmp_path / "a.tar.gz", {"top/x": b"X", "../evil": b"E", "top/y": b"Y"})
    out = tmp_path / "out"
    extract_members(archive, {"top/x": "x"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["x"] and (out / "x").read_bytes() == b"X"
    assert not (tmp_path / "evil").exists()
    with pytest.raises(DataError, match="lacks top/z"):
        extract_members(archive, {"top/z": "z"}, out)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"0" * 50)
    with pytest.raises(DataError, match="cannot extract"):
        extract_members(bad, {"top/x": "x"}, out)


# ------------------------------------------------------------ sources and splits
def test_user_dirs_root_beats_env(tmp_path, monkeypatch):
    assert user_dirs(None, "mnist") == []
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path / "env"))
    assert user_dirs(None, "mnist") == [tmp_path / "env" / "mnist", tmp_path / "env"]
    assert user_dirs(tmp_path / "r", "mnist") == [tmp_path / "r" / "mnist", tmp_path / "r"]


def _toy(n=100, k=10):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    labels = torch.arange(n) % k
    return images, labels


NAMES = tuple("abcdefghij")


def test_val_split_deterministic_disjoint_and_complete():
    images, labels = _toy()
    kw = dict(classes=None, val_size=30, val_seed=5)
    val = select("toy", "val", images, labels, NAMES, **kw)
    train = select("toy", "train", images, labels, NAMES, **kw)
    again = select("toy", "val", images, labels, NAMES, **kw)
    other = select("toy", "val", images, labels, NAMES, **{**kw, "val_seed": 6})
    ids = lambda d: (d.images[:, 0, 0, 0] * 255).round().long()  # noqa: E731
    assert len(val) == 30 and len(train) == 70
    assert torch.equal(ids(val), ids(again))
    assert not torch.equal(ids(val), ids(other))
    assert set(ids(val).tolist()).isdisjoint(ids(train).tolist())
    assert sorted(ids(val).tolist() + ids(train).tolist()) == list(range(100))
    assert torch.equal(val.labels, ids(val) % 10)  # labels stay with their images
    assert val.split == "val" and train.split == "train"
    test = select("toy", "test", images, labels, NAMES, **kw)  # val_size ignored on test
    assert len(test) == 100


def test_classes_relabel_in_given_order():
    images, labels = _toy()
    d = select("toy", "train", images, labels, NAMES, classes=(7, 3), val_size=0, val_seed=0)
    orig = (d.images[:, 0, 0, 0] * 255).round().long() % 10
    assert len(d) == 20 and d.num_classes == 2 and d.classes == ("h", "d")
    assert torch.equal(d.labels, torch.where(orig == 7, 0, 1))
    assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
    by_name = select("toy", "train", images, labels, NAMES, classes=("h", "d"), val_size=0, val_seed=0)
    assert torch.equal(by_name.labels, d.labels)
    v = select("toy", "val", images, labels, NAMES, classes=(7, 3), val_size=5, val_seed=0)
    assert len(v) == 5 and set(v.labels.tolist()) <= {0, 1}


@pytest.mark.parametrize("classes, match", [((3, 3), "repeat"), ((True, 2), "neither"), (("zz",), "unknown class"),
                                            ((0, 10), "out of range"), (3, "sequence"), ((), "sequence")])
def test_bad_classes(classes, match):
    images, labels = _toy()
    with pytest.raises(DataError, match=match):
        select("toy", "train", images, labels, NAMES, classes=classes, val_size=0, val_seed=0)


def test_split_argument_errors():
    from advgeom.data._files import check_split_args
    assert check_split_args("toy", "val", 3) == "train"
    assert check_split_args("toy", "test", 0) == "test"
    with pytest.raises(DataError, match="val_size > 0"):
        check_split_args("toy", "val", 0)
    with pytest.raises(DataError, match="unknown split"):
        check_split_args("toy", "valid", 10)
    with pytest.raises(DataError, match="val_size"):
        check_split_args("toy", "train", -1)
    images, labels = _toy()
    with pytest.raises(DataError, match="leaves no training"):
        select("toy", "train", images, labels, NAMES, classes=(1, 2), val_size=20, val_seed=0)


def test_select_returns_fresh_tensors():
    images, labels = _toy()
    d = select("toy", "train", images, labels, NAMES, classes=None, val_size=0, val_seed=0)
    d.images.zero_()
    d.labels.zero_()
    assert int(images.max()) == 99 and int(labels.max()) == 9
