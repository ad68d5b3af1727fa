"""Content hashes: the fingerprints of weights, data and text that key cached runs and
finished units (used by training and evaluation alike)."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn


def tensor_header(t: Tensor, rows: int | None = None, name: str = "") -> bytes:
    """What a hash reads before a tensor's values: its name, dtype and shape (``rows``:
    the length of the whole tensor when ``t`` is only its first rows)."""
    shape = tuple(t.shape) if rows is None else (int(rows), *t.shape[1:])
    return f"{name}{t.dtype}|{shape}".encode()


def tensor_bytes(t: Tensor) -> bytes:
    """A tensor's values as the bytes a hash reads (row-major; rows in order, so the
    bytes of a tensor are those of its row blocks one after another)."""
    t = t.detach()
    return t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _hash_tensors(items: Any) -> str:
    h = hashlib.sha256()
    for name, t in items:
        h.update(tensor_header(t, name=name))
        h.update(tensor_bytes(t))
    return h.hexdigest()


def state_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, values)."""
    return _hash_tensors((f"{name}|", t) for name, t in model.state_dict().items())


def tensor_hash(*tensors: Tensor) -> str:
    """SHA-256 of the given tensors' shapes, dtypes and values."""
    return _hash_tensors(("", t) for t in tensors)


def text_hash(*parts: Any, length: int = 32) -> str:
    """Short SHA-256 of the parts' ``repr``s joined (unit keys)."""
    return hashlib.sha256("\x1f".join(map(repr, parts)).encode()).hexdigest()[:length]
