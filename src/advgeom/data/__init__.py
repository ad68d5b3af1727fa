"""Data sets as float32 tensors in [0,1] with int64 labels; ``load(name, split)``.

Sources, in order: a user directory (``root=`` / ``--data-dir`` / ``ADVGEOM_DATA``),
the offline packages of docs/design.md, then a checksummed download when asked.
"""
from advgeom.data.base import TensorData, load
from advgeom.registry import import_submodules

import_submodules(__name__)

__all__ = ["TensorData", "load"]
