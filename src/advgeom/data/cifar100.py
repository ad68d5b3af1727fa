"""CIFAR-100 (N x 3 x 32 x 32 float32 in [0,1]; 100 fine or 20 coarse classes), read from
a user directory: the weight-penalty paper's Table 3 (weight-penalization-classification-
layer.txt) is on CIFAR-100.

Not obtainable offline on the project's machines and not downloaded by advgeom: put the
standard python-pickle files of ``cifar-100-python.tar.gz`` in a directory and pass it as
``root`` (or set ``$ADVGEOM_DATA``). Looked for, in order: ``<dir>/cifar100/`` and
``<dir>/``, each holding ``cifar-100-python/`` or the files ``train`` and ``test`` directly
(``meta`` beside them gives the class names; without it the classes are named by index).
The files go through the same restricted unpickler as CIFAR-10 (numpy arrays and builtin
containers only); shapes, label ranges and counts are checked, and every error names the
expected layout.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch import Tensor

from advgeom.data._files import (Looked, check_count, check_split_args, load_cifar_batches,
                                 load_pickle, resolve_classes, select, user_dirs)
from advgeom.data.base import TensorData
from advgeom.errors import DataError
from advgeom.registry import register

NAME = "cifar100"
SUBDIR = "cifar100"
BATCH_DIR = "cifar-100-python"
COUNTS = {"train": 50000, "test": 10000}
LABELS = {"fine": ("fine_labels", 100, "fine_label_names"),
          "coarse": ("coarse_labels", 20, "coarse_label_names")}
LAYOUT = (f"expected {BATCH_DIR}/train, {BATCH_DIR}/test (and meta) from cifar-100-python.tar.gz, "
          "under <dir>/cifar100/ or <dir>/ with <dir> the root argument or $ADVGEOM_DATA")


def _directory(d: Path) -> Path | None:
    """The directory holding ``train``/``test``: ``d/cifar-100-python`` or ``d`` itself."""
    for c in (d / BATCH_DIR, d):
        if (c / "train").is_file() or (c / "test").is_file():
            return c
    return None


def class_names(directory: Path, labels: str) -> tuple[str, ...]:
    """The class names of ``labels`` ("fine" or "coarse") from ``meta``, else ``"0".."99"``."""
    _, count, key = LABELS[labels]
    meta = directory / "meta"
    if not meta.is_file():
        return tuple(str(i) for i in range(count))
    obj = load_pickle(meta)
    table = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()} \
        if isinstance(obj, dict) else {}
    names = table.get(key)
    if not isinstance(names, list) or len(names) != count:
        raise DataError(f"{meta}: CIFAR-100 meta lacks {count} {key} ({LAYOUT})")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def load_split(file_split: str, *, root: str | os.PathLike | None,
               labels: str) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """uint8 images, int64 labels and class names of ``file_split`` from a user directory."""
    looked = Looked(NAME, file_split)
    dirs = user_dirs(root, SUBDIR)
    if not dirs:
        looked.add("$ADVGEOM_DATA (not set)")
    label_key, count, _ = LABELS[labels]
    for d in dirs:
        found = _directory(d)
        if found is None:
            looked.add(f"{d} (no {BATCH_DIR}/{file_split})" if d.is_dir() else f"{d} (does not exist)")
            continue
        path = found / file_split
        if not path.is_file():
            raise DataError(f"{NAME}: {found} holds the other split but not {file_split} ({LAYOUT})")
        images, y = load_cifar_batches([path], num_classes=count, label_key=label_key)
        check_count(NAME, len(y), COUNTS[file_split], path, strict=False)
        return images, y, class_names(found, labels)
    raise looked.error(f"advgeom does not download CIFAR-100: {LAYOUT}.")


@register("dataset", NAME)
def cifar100(split: str = "train", *, root: str | os.PathLike | None = None, labels: str = "fine",
             val_size: int = 0, val_seed: int = 0,
             classes: Sequence[int | str] | None = None) -> TensorData:
    """CIFAR-100 ``split`` ("train", "val" with ``val_size > 0``, "test") with its 100 fine
    (``labels="fine"``) or 20 coarse (``"coarse"``) classes, float32 [0,1] images."""
    if labels not in LABELS:
        raise DataError(f"{NAME}: labels must be 'fine' or 'coarse', got {labels!r}")
    file_split = check_split_args(NAME, split, val_size)
    images, y, names = load_split(file_split, root=root, labels=labels)
    resolve_classes(NAME, classes, names)
    return select(NAME, split, images, y, names, classes=classes, val_size=val_size, val_seed=val_seed)
