"""In-memory data sets: float32 images in [0,1] (NCHW, or N x d for vectors) and
int64 labels, plus ``load(name, split)``, the single entry point."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from advgeom.errors import DataError
from advgeom.registry import create


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


def load(name: str, split: str = "train", **kwargs: object) -> TensorData:
    """Load data set ``name`` (``advgeom list datasets``) split ``train``/``test``/``val``.

    Returns a :class:`TensorData` (the whole split in memory as tensors).
    """
    return create("dataset", name, split=split, **kwargs)
