"""Shared readers for the image data sets (MNIST, Fashion-MNIST, CIFAR-10).

IDX files (raw or gzip), python-pickle batches through a restricted unpickler,
sha256 checks, checksummed downloads, the places searched for a data set, and the
train/val/test + class-subset logic behind ``advgeom.data.{mnist, fashion_mnist,
cifar10}`` (the data of sparsification-robustness.txt, hyperspherical-defense.txt,
weight-penalization-classification-layer.txt and spectral-norm-adversarial-training.txt).

Every failure is a one-line :class:`~advgeom.errors.DataError` naming the file;
nothing is skipped silently.

Caching: decoded splits are kept per process in ``functools.lru_cache`` tables keyed
on (path, mtime, size) of the source files.  Cached arrays never leave this package:
:func:`select` always builds fresh tensors, so callers may modify what they get.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import operator
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.parse
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from advgeom.data.base import TensorData
from advgeom.errors import DataError, one_line
from advgeom.seeding import make_generator

PathKey = tuple[str, int, int]  # (path, mtime_ns, size): the cache key of one file


def _one_line(exc: BaseException) -> str:
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def file_key(path: Path) -> PathKey:
    """Cache key of a file: its resolved path, modification time and size."""
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def sha256_file(path: Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if path.name.endswith(".gz"):
        raise DataError(f"{path}: bad gzip file (no gzip header)")
    return open(path, "rb")


# ----------------------------------------------------------------------------- IDX
_IDX_UBYTE = 0x08
_MAX_IDX_BYTES = 1 << 32


def read_idx(path: Path) -> np.ndarray:
    """The unsigned-byte array of an IDX file (raw, or gzip by its header)."""
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (bad magic 0x{head.hex()})")
            if head[2] != _IDX_UBYTE:
                raise DataError(f"{path}: unsupported IDX element type 0x{head[2]:02x} (need 0x08 ubyte)")
            ndim = head[3]
            if ndim == 0:
                raise DataError(f"{path}: IDX header declares 0 dimensions")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            size = math.prod(dims)
            if size > _MAX_IDX_BYTES:
                raise DataError(f"{path}: IDX header claims an implausible {size} bytes")
            payload = f.read(size)
            if len(payload) < size:
                raise DataError(
                    f"{path}: truncated: header {tuple(dims)} needs {size} data bytes, found {len(payload)}")
            if f.read(1):
                raise DataError(f"{path}: trailing bytes after the {size} data bytes of shape {tuple(dims)}")
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({_one_line(exc)})") from None
    return np.frombuffer(bytearray(payload), dtype=np.uint8).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path, *, image_shape: tuple[int, int] = (28, 28),
                  num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x H x W uint8) and labels (N int64) from an IDX image/label pair, validated."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != tuple(image_shape):
        raise DataError(f"{images_path}: expected images N x {image_shape[0]} x {image_shape[1]} "
                        f"(IDX magic 0x00000803), got dims {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-D label file (IDX magic 0x00000801), got dims {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: label count mismatch: {len(labels)} labels for "
                        f"{len(images)} images in {images_path}")
    check_labels(labels, num_classes, labels_path)
    return images, labels.astype(np.int64)


def check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    """DataError naming ``path`` unless all labels lie in 0..num_classes-1."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"{path}: labels out of range: found {int(labels.min())}..{int(labels.max())}, "
                        f"need 0..{num_classes - 1}")


@functools.lru_cache(maxsize=8)
def _idx_pair_cached(images: PathKey, labels: PathKey, image_shape: tuple[int, int],
                     num_classes: int) -> tuple[Tensor, Tensor]:
    x, y = read_idx_pair(Path(images[0]), Path(labels[0]), image_shape=image_shape, num_classes=num_classes)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def load_idx_pair(images_path: Path, labels_path: Path, *, image_shape: tuple[int, int] = (28, 28),
                  num_classes: int = 10) -> tuple[Tensor, Tensor]:
    """Cached (per process) N x 1 x H x W uint8 images and int64 labels; do not modify them."""
    return _idx_pair_cached(file_key(images_path), file_key(labels_path), tuple(image_shape), num_classes)


# -------------------------------------------------------------------- safe pickles
def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    # python-3 pickles (protocol < 3) store bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.empty(0).__reduce__()[0]
    frombuffer = np.empty(1).__reduce_ex__(5)[0]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


_ALLOWED = _allowed_globals()


class _SafeUnpickler(pickle.Unpickler):
    """Builtin containers, bytes and numpy arrays only; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_pickle(path: Path) -> Any:
    """Unpickle a (possibly gzip) file of containers and numpy arrays; anything else is refused."""
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except DataError:
        raise
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: unsafe or corrupted pickle refused ({_one_line(exc)})") from None
    except Exception as exc:  # a corrupted pickle can raise almost anything
        raise DataError(f"{path}: corrupted pickle ({_one_line(exc)})") from None


def read_cifar_batch(path: Path, *, num_classes: int = 10,
                     label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 3 x 32 x 32 uint8) and labels (N int64) of one CIFAR python batch
    (``label_key``: "labels" in CIFAR-10, "fine_labels" / "coarse_labels" in CIFAR-100)."""
    obj = load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR batch (a {type(obj).__name__}, expected a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        raise DataError(f"{path}: CIFAR batch lacks key(s) {', '.join(missing)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: CIFAR 'data' must be a uint8 N x 3072 array, got {desc}")
    labels = np.asarray(batch[label_key])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: CIFAR '{label_key}' must be a list of ints, got {labels.dtype} {labels.shape}")
    if len(labels) != len(data):
        raise DataError(f"{path}: label count mismatch: {len(labels)} labels for {len(data)} images")
    check_labels(labels, num_classes, path)
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), labels.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _cifar_cached(keys: tuple[PathKey, ...], num_classes: int, label_key: str) -> tuple[Tensor, Tensor]:
    parts = [read_cifar_batch(Path(k[0]), num_classes=num_classes, label_key=label_key) for k in keys]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def load_cifar_batches(paths: Sequence[Path], *, num_classes: int = 10,
                       label_key: str = "labels") -> tuple[Tensor, Tensor]:
    """Cached (per process) concatenation of CIFAR batches; do not modify the result."""
    return _cifar_cached(tuple(file_key(p) for p in paths), num_classes, label_key)


# ----------------------------------------------------------------------- download
@dataclass(frozen=True)
class Remote:
    """A file to fetch by name from a list of mirrors, checked against its sha256."""

    name: str
    sha256: str
    size: int | None = None


_SCHEMES = ("https", "http", "file")


def _stream(url: str, dest: Path, max_bytes: int | None, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": "advgeom"})
    h, n = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            n += len(chunk)
            if max_bytes is not None and n > max_bytes:
                raise DataError(f"more than the expected {max_bytes} bytes")
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def fetch(remote: Remote, mirrors: Sequence[str], dest_dir: Path, *, timeout: float = 60.0) -> Path:
    """``dest_dir/remote.name`` with the right sha256, downloading it when absent or wrong.

    Mirrors are tried in order; a download whose sha256 differs is deleted, never kept.
    """
    dest = Path(dest_dir) / remote.name
    if dest.is_file() and sha256_file(dest) == remote.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in mirrors:
        url = urllib.parse.urljoin(base if base.endswith("/") else base + "/", remote.name)
        if urllib.parse.urlparse(url).scheme not in _SCHEMES:
            errors.append(f"{url}: scheme not one of {', '.join(_SCHEMES)}")
            continue
        fd, name = tempfile.mkstemp(prefix=remote.name + ".", suffix=".part", dir=dest.parent)
        os.close(fd)
        part = Path(name)
        try:
            digest = _stream(url, part, remote.size, timeout)
            if digest != remote.sha256:
                errors.append(f"{url}: sha256 {digest} differs from the expected {remote.sha256} (file not kept)")
                continue
            os.chmod(part, 0o644)
            os.replace(part, dest)
            return dest
        except (OSError, ValueError) as exc:  # URLError, HTTPError and DataError included
            errors.append(f"{url}: {_one_line(exc)}")
        finally:
            part.unlink(missing_ok=True)  # gone already after a successful os.replace
    raise DataError(f"could not download {remote.name} into {dest.parent}: " + "; ".join(errors or ["no mirrors"]))


def extract_members(archive: Path, members: dict[str, str], dest_dir: Path) -> None:
    """Copy the named regular files of a tar archive to ``dest_dir/<new name>`` (no archive paths trusted)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member, out_name in members.items():
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise DataError(f"{archive}: archive lacks {member}") from None
                src = tar.extractfile(info) if info.isfile() else None
                if src is None:
                    raise DataError(f"{archive}: {member} is not a regular file")
                part = dest_dir / (out_name + ".part")
                try:
                    with src, open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    os.replace(part, dest_dir / out_name)
                finally:
                    part.unlink(missing_ok=True)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: cannot extract ({_one_line(exc)})") from None


# ------------------------------------------------------------------------ sources
def user_dirs(root: str | os.PathLike | None, subdir: str) -> list[Path]:
    """Directories to search first: ``root`` (else $ADVGEOM_DATA) / subdir, then the directory itself."""
    base = root if root is not None else (os.environ.get("ADVGEOM_DATA") or None)
    if base is None:
        return []
    base = Path(base).expanduser()
    return [base / subdir, base]


def cache_dir(subdir: str) -> Path:
    """Where downloads go when no ``root`` is given: $XDG_CACHE_HOME (else ~/.cache) /advgeom/subdir."""
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base).expanduser() / "advgeom" / subdir


def download_dir(root: str | os.PathLike | None, subdir: str) -> Path:
    """``root/subdir`` when a root is given, else :func:`cache_dir`."""
    return Path(root).expanduser() / subdir if root is not None else cache_dir(subdir)


class Looked:
    """Places searched for a data set, so that the final error names them all."""

    def __init__(self, dataset: str, split: str) -> None:
        self.dataset, self.split, self.places = dataset, split, []

    def add(self, place: str) -> None:
        self.places.append(place)

    def error(self, hint: str) -> DataError:
        where = "; ".join(self.places) or "nowhere"
        return DataError(f"{self.dataset}: no {self.split} data found. Looked in: {where}. {hint}")


def find_files(directory: Path, names: Sequence[Sequence[str]]) -> list[Path] | None:
    """One existing path per entry of ``names`` (each entry lists accepted spellings) in ``directory``.

    None when none of them is there; DataError naming the missing ones when only some are.
    """
    found = [next((directory / n for n in alts if (directory / n).is_file()), None) for alts in names]
    if all(p is None for p in found):
        return None
    missing = [alts[0] for alts, p in zip(names, found) if p is None]
    if missing:
        raise DataError(f"{directory}: incomplete data set: {', '.join(missing)} missing")
    return [p for p in found if p is not None]


def check_count(dataset: str, n: int, expected: int, path: Path, *, strict: bool) -> None:
    """Standard split sizes: an error for offline packages and downloads, a warning for user files."""
    if n == expected:
        return
    msg = f"{dataset}: {path} holds {n} images, the standard split has {expected}"
    if strict:
        raise DataError(msg)
    warnings.warn(msg, stacklevel=4)


# ------------------------------------------------------------ splits and classes
SPLITS = ("train", "val", "test")


def check_split_args(dataset: str, split: str, val_size: int) -> str:
    """Validate ``split``/``val_size``; return the file split ("train" or "test") to read."""
    if split not in SPLITS:
        raise DataError(f"{dataset}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    try:
        if isinstance(val_size, bool):
            raise TypeError
        val_size = operator.index(val_size)
    except TypeError:
        raise DataError(f"{dataset}: val_size must be an int >= 0, got {val_size!r}") from None
    if val_size < 0:
        raise DataError(f"{dataset}: val_size must be an int >= 0, got {val_size!r}")
    if split == "val" and val_size == 0:
        raise DataError(f"{dataset}: split 'val' needs val_size > 0 (images carved out of the train split)")
    return "test" if split == "test" else "train"


def resolve_classes(dataset: str, classes: Sequence[int | str] | None,
                    names: Sequence[str]) -> tuple[int, ...] | None:
    """Class indices from indices or names (``(3, 7)``, ``("T-shirt/top", "Pullover")``)."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes, int)) or not isinstance(classes, Sequence) or not classes:
        raise DataError(f"{dataset}: classes must be a non-empty sequence of class indices or names, got {classes!r}")
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise DataError(f"{dataset}: unknown class {c!r}; classes are {', '.join(names)}")
            out.append(names.index(c))
            continue
        try:
            if isinstance(c, bool):
                raise TypeError
            i = operator.index(c)
        except TypeError:
            raise DataError(f"{dataset}: class {c!r} is neither an index nor a name") from None
        if not 0 <= i < len(names):
            raise DataError(f"{dataset}: class index {i} out of range 0..{len(names) - 1}")
        out.append(i)
    if len(set(out)) != len(out):
        raise DataError(f"{dataset}: classes repeat: {classes!r}")
    return tuple(out)


def select(dataset: str, split: str, images: Tensor, labels: Tensor, names: Sequence[str], *,
           classes: Sequence[int | str] | None, val_size: int, val_seed: int) -> TensorData:
    """The requested split as a fresh float32 [0,1] TensorData.

    ``classes`` keeps those classes relabelled 0..k-1 in the given order; then, for
    "train"/"val" with ``val_size > 0``, a permutation seeded by ``val_seed`` of the
    (class-filtered) train images puts ``val_size`` of them in "val" and the rest in
    "train".  Both keep file order.  ``val_size`` is ignored for "test".
    """
    ids = resolve_classes(dataset, classes, names)
    idx = torch.arange(len(labels))
    new_labels = labels
    if ids is not None:
        keep = torch.isin(labels, torch.tensor(ids, dtype=labels.dtype))
        idx = keep.nonzero().squeeze(1)
        lut = torch.full((len(names),), -1, dtype=torch.int64)
        lut[list(ids)] = torch.arange(len(ids))
        new_labels = lut[labels]
    if split != "test" and val_size > 0:
        if val_size >= len(idx):
            raise DataError(f"{dataset}: val_size={val_size} leaves no training images (train has {len(idx)})")
        perm = torch.randperm(len(idx), generator=make_generator(val_seed))
        chosen = perm[:val_size] if split == "val" else perm[val_size:]
        idx = idx[chosen.sort().values]
    x = images[idx].to(torch.float32).div_(255.0)
    y = new_labels[idx].to(torch.int64)
    kept = tuple(names[i] for i in ids) if ids is not None else tuple(names)
    return TensorData(x, y, len(kept), dataset, split, kept)
