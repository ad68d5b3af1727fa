"""Explicit randomness: generators are passed around, global seeds are set only by
the CLI and experiments (DESIGN.md rule)."""
from __future__ import annotations

import random

import numpy as np
import torch


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
