"""In-memory data sets: float32 images in [0,1] (NCHW, or N x d for vectors) and
int64 labels, plus ``load(name, split)``, the single entry point."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from advgeom.errors import DataError
from advgeom.registry import accepts, create


@dataclass
class TensorData(Dataset):
    """A whole split held as two tensors; ``ds[i] -> (image, label)``."""

    images: Tensor
    labels: Tensor
    num_classes: int
    name: str = ""
    split: str = ""
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def subset(self, n: int | None = None, *, indices: Tensor | None = None) -> "TensorData":
        """First ``n`` samples, or the given ``indices``."""
        idx = indices if indices is not None else torch.arange(min(n or len(self), len(self)))
        return TensorData(self.images[idx], self.labels[idx], self.num_classes, self.name,
                          self.split, self.classes)


# Set to "1" (the CLI's ``--download``): every data set that can download does, unless
# its call says ``download=`` itself.
DOWNLOAD_ENV = "ADVGEOM_DOWNLOAD"


def can_download(name: str) -> bool:
    """Whether data set ``name`` has a download source (its loader takes ``download``);
    the others are generated or read only from a user directory or an offline package."""
    return accepts("dataset", name, "download")


def load(name: str, split: str = "train", **kwargs: object) -> TensorData:
    """Load data set ``name`` (``advgeom list datasets``) split ``train``/``test``/``val``.

    Returns a :class:`TensorData` (the whole split in memory as tensors). With
    ``$ADVGEOM_DOWNLOAD=1`` (``--download``), a data set that can download is fetched
    when no local source has it.
    """
    if "download" not in kwargs and os.environ.get(DOWNLOAD_ENV) == "1" and can_download(name):
        kwargs["download"] = True
    return create("dataset", name, split=split, **kwargs)
