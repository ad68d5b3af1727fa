"""Explicit randomness: generators are passed around, global seeds are set only by
the CLI and experiments (docs/design.md rule)."""
from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


_MASK63 = (1 << 63) - 1


def derive_seed(*parts: Any, joined: bool = False) -> int:
    """A 63-bit seed determined by ``parts`` alone (stable across processes, machines
    and Python versions): the same unit of work always gets the same randomness.

    Two byte encodings exist, and each is kept because changing it would change every
    stored result seeded with it:

    - default (training and experiments: model initialization, batches, objectives):
      sha256 of ``repr(parts)``, first 8 bytes read little-endian;
    - ``joined=True`` (evaluation units: attack generators): sha256 of the parts'
      ``repr``s joined by U+001F, first 8 bytes read big-endian.
    """
    if joined:
        digest = hashlib.sha256("\x1f".join(map(repr, parts)).encode()).digest()
        return int.from_bytes(digest[:8], "big") & _MASK63
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MASK63


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed`` on ``device``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global RNGs (only for CLI / experiment entry points)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
