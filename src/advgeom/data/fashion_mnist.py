"""Fashion-MNIST (N x 1 x 28 x 28 float32 in [0,1], 10 clothing classes).

Used by sparsification-robustness.txt (Fashion-MNIST tables; the binary task
T-shirt/top vs Pullover is ``classes=(0, 2)`` or ``classes=("T-shirt/top", "Pullover")``).

Sources, in order (the error when none is found names every place looked):

1. ``root`` (else ``$ADVGEOM_DATA``): ``<dir>/fashion-mnist/`` or ``<dir>/`` holding the IDX
   files ``train-images-idx3-ubyte[.gz]``, ... (any consistent count; a warning names
   non-standard sizes).
2. Debian's ``dataset-fashion-mnist`` package: ``/usr/share/datasets/fashion-mnist`` (IDX .gz,
   counts checked strictly; its gzip files are recompressed, so no sha256 is pinned for them).
3. The download cache ``$XDG_CACHE_HOME/advgeom/fashion-mnist`` (default ``~/.cache``).
4. ``download=True``: Zalando's ``.gz`` files over HTTPS, checked against the sha256 below.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch import Tensor

from advgeom.data._files import Looked, Remote, check_split_args, resolve_classes, select
from advgeom.data.base import TensorData
from advgeom.data.mnist import IdxSpec, find_idx, load_idx_files, load_idx_split
from advgeom.registry import register

NAME = "fashion-mnist"

OFFLINE_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

SPEC = IdxSpec(
    name=NAME,
    subdir="fashion-mnist",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    counts={"train": 60000, "test": 10000},
    mirrors=("https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    remotes={r.name: r for r in (
        Remote("train-images-idx3-ubyte.gz",
               "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        Remote("train-labels-idx1-ubyte.gz",
               "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        Remote("t10k-images-idx3-ubyte.gz",
               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        Remote("t10k-labels-idx1-ubyte.gz",
               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    )},
)


def _from_package(file_split: str, looked: Looked) -> tuple[Tensor, Tensor] | None:
    for d in OFFLINE_DIRS:
        paths = find_idx(d, file_split)
        if paths is not None:
            return load_idx_files(SPEC, paths, file_split, strict=True)
        looked.add(f"{d} (Debian dataset-fashion-mnist: not installed)")
    return None


@register("dataset", NAME)
def fashion_mnist(split: str = "train", *, root: str | os.PathLike | None = None, download: bool = False,
                  val_size: int = 0, val_seed: int = 0,
                  classes: Sequence[int | str] | None = None) -> TensorData:
    """Fashion-MNIST ``split`` ("train", "val" with ``val_size > 0``, "test") as float32 [0,1] images.

    ``classes=(0, 2)`` keeps T-shirt/top and Pullover relabelled 0 and 1
    (sparsification-robustness.txt).
    """
    file_split = check_split_args(NAME, split, val_size)
    resolve_classes(NAME, classes, SPEC.class_names)
    images, labels = load_idx_split(SPEC, file_split, root=root, download=download, offline=_from_package)
    return select(NAME, split, images, labels, SPEC.class_names, classes=classes,
                  val_size=val_size, val_seed=val_seed)
