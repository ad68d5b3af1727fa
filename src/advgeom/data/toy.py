"""A two-feature toy problem in [0,1]^2 with one robust and one non-robust feature, after
Tsipras et al. (2019), "Robustness May Be at Odds with Accuracy", Section 2.

Label y in {0, 1}, s = 2y - 1. Feature 1 is *robust but noisy*: ``0.5 + s * gap +
noise * N(0, 1)`` (clipped to [0,1]); feature 2 is *non-robust but perfect*:
``0.5 + s * shift`` exactly. With the defaults (gap 0.25, noise 0.1, shift 0.05) a
classifier on feature 2 alone is 100% accurate and 0% robust at linf eps >= 0.05,
while the best classifier on feature 1 is ~99% accurate and ~93% robust at eps 0.1
(P(noise < 0.15)). Natural training leans on feature 2; adversarial training must
move to feature 1, which makes the data set a small, exact test of adversarial
training (used by advgeom's tests and quick examples).
"""
from __future__ import annotations

import torch

from advgeom.data.base import TensorData
from advgeom.errors import DataError
from advgeom.registry import register
from advgeom.seeding import make_generator

_SPLITS = {"train": 0, "val": 1, "test": 2}


@register("dataset", "robust_features_2d")
def robust_features_2d(split: str = "train", *, n: int = 2000, gap: float = 0.25,
                       noise: float = 0.1, shift: float = 0.05, seed: int = 0,
                       **_: object) -> TensorData:
    """``n`` balanced points of the robust/non-robust feature toy (Tsipras et al. 2019)."""
    if split not in _SPLITS:
        raise DataError(f"robust_features_2d: unknown split {split!r}; use train, val or test")
    if int(n) < 2:
        raise DataError(f"robust_features_2d: n must be >= 2, got {n}")
    for name, v in (("gap", gap), ("shift", shift)):
        if not 0.0 <= float(v) <= 0.5:
            raise DataError(f"robust_features_2d: {name} must be in [0, 0.5], got {v}")
    if not float(noise) >= 0.0:
        raise DataError(f"robust_features_2d: noise must be >= 0, got {noise}")
    g = make_generator(10_007 * int(seed) + 101 * _SPLITS[split] + 3)
    y = torch.arange(int(n)) % 2
    y = y[torch.randperm(int(n), generator=g)]
    s = (2 * y - 1).float()
    f1 = 0.5 + s * float(gap) + float(noise) * torch.randn(int(n), generator=g)
    f2 = 0.5 + s * float(shift)
    x = torch.stack([f1.clamp(0.0, 1.0), f2], dim=1)
    return TensorData(x, y.to(torch.int64), 2, name="robust_features_2d", split=split,
                      classes=("negative", "positive"))
