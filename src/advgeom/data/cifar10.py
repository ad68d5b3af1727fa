"""CIFAR-10 (N x 3 x 32 x 32 float32 in [0,1], 10 object classes).

Used by hyperspherical-defense.txt, weight-penalization-classification-layer.txt and
spectral-norm-adversarial-training.txt.  Not obtainable offline on the project's
machines: the loader reads the standard python-pickle batches of
``cifar-10-python.tar.gz`` through a restricted unpickler (numpy arrays and builtin
containers only; anything else is refused with a DataError).

Sources, in order (the error when none is found names every place looked):

1. ``root`` (else ``$ADVGEOM_DATA``): ``<dir>/cifar10/`` or ``<dir>/``, each either holding
   ``cifar-10-batches-py/`` or the batches ``data_batch_1..5``, ``test_batch`` directly (any
   consistent count; a warning names non-standard sizes).
2. The download cache ``$XDG_CACHE_HOME/advgeom/cifar10`` (default ``~/.cache``).
3. ``download=True``: ``cifar-10-python.tar.gz`` over HTTPS into ``root/cifar10`` (or the
   cache), checked against the sha256 below, then its six batches are extracted beside it
   (an archive already there with the right sha256 is used without downloading).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch import Tensor

from advgeom.data._files import (
    Looked, Remote, cache_dir, check_count, check_split_args, download_dir, extract_members, fetch,
    find_files, load_cifar_batches, resolve_classes, select, user_dirs,
)
from advgeom.data.base import TensorData
from advgeom.errors import DataError
from advgeom.registry import register

NAME = "cifar10"
SUBDIR = "cifar10"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
COUNTS = {"train": 50000, "test": 10000}
BATCH_DIR = "cifar-10-batches-py"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
ARCHIVE = Remote("cifar-10-python.tar.gz",
                 "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", 170498071)


def find_batches(directory: Path, file_split: str) -> list[Path] | None:
    """The batch files of ``file_split`` in ``directory/cifar-10-batches-py`` or ``directory``."""
    for d in (directory / BATCH_DIR, directory):
        paths = find_files(d, [(n,) for n in BATCHES[file_split]])
        if paths is not None:
            return paths
    return None


def _load(paths: Sequence[Path], file_split: str, *, strict: bool) -> tuple[Tensor, Tensor]:
    images, labels = load_cifar_batches(paths)
    check_count(NAME, len(labels), COUNTS[file_split], paths[0].parent, strict=strict)
    return images, labels


def load_split(file_split: str, *, root: str | os.PathLike | None, download: bool) -> tuple[Tensor, Tensor]:
    """uint8 N x 3 x 32 x 32 images and int64 labels of ``file_split`` from the first source found."""
    looked = Looked(NAME, file_split)
    first = BATCHES[file_split][0]
    dirs = user_dirs(root, SUBDIR)
    if not dirs:
        looked.add("$ADVGEOM_DATA (not set)")
    other = "test" if file_split == "train" else "train"
    for d in dirs:
        paths = find_batches(d, file_split)
        if paths is not None:
            return _load(paths, file_split, strict=False)
        if find_batches(d, other) is not None:
            raise DataError(f"{NAME}: {d} holds the {other} batches but not {first}")
        note = f"; {ARCHIVE.name} is there: pass download=True (advgeom: --download) to verify and extract it" \
            if (d / ARCHIVE.name).is_file() else ""
        looked.add(f"{d} (no {BATCH_DIR}/{first}{note})" if d.is_dir() else f"{d} (does not exist)")
    cache = cache_dir(SUBDIR)
    paths = find_batches(cache, file_split)
    if paths is not None:
        return _load(paths, file_split, strict=True)
    looked.add(f"{cache} (download cache; no {BATCH_DIR}/{first})")
    if not download:
        raise looked.error(f"Pass download=True (advgeom: --download) to fetch {MIRRORS[0]}{ARCHIVE.name} (163 MiB), "
                           "or set ADVGEOM_DATA to a directory holding cifar-10-batches-py/.")
    dest = download_dir(root, SUBDIR)
    archive = fetch(ARCHIVE, MIRRORS, dest)
    wanted = BATCHES["train"] + BATCHES["test"]
    extract_members(archive, {f"{BATCH_DIR}/{n}": n for n in wanted}, dest / BATCH_DIR)
    return _load([dest / BATCH_DIR / n for n in BATCHES[file_split]], file_split, strict=True)


@register("dataset", NAME)
def cifar10(split: str = "train", *, root: str | os.PathLike | None = None, download: bool = False,
            val_size: int = 0, val_seed: int = 0,
            classes: Sequence[int | str] | None = None) -> TensorData:
    """CIFAR-10 ``split`` ("train", "val" with ``val_size > 0``, "test") as float32 [0,1] images."""
    file_split = check_split_args(NAME, split, val_size)
    resolve_classes(NAME, classes, CLASS_NAMES)
    images, labels = load_split(file_split, root=root, download=download)
    return select(NAME, split, images, labels, CLASS_NAMES, classes=classes,
                  val_size=val_size, val_seed=val_seed)
