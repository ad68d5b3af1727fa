"""The concentric-spheres data set of adversarial-spheres.txt (Section 2).

Two spheres centred at the origin of R^d: the inner one of radius 1 (label 0) and the
outer one of radius R (label 1). Points are uniform on each sphere: x = r z/||z||,
z ~ N(0, I).

Exception to the [0,1] input contract of docs/design.md: sphere points are NOT images. Their
coordinates lie in [-R, R], so ``advgeom.types.check_inputs`` (which demands [0,1]) does
not apply to them, and the generic attacks (which clip to [0,1]) must not be used on
them. The sphere models (``advgeom.models.spheres``) take raw coordinates, and the
sphere attacks (``advgeom.attacks.manifold``) never clip to [0,1].

Two regimes (paper Section 2): a fixed training set of N points drawn once with a
seeded generator (train and test use different seeds), and the online regime, where
``online=True`` returns an :class:`OnlineSphereData` whose ``sample_batch`` draws fresh
balanced uniform samples every training step (N = infinity).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from advgeom.data.base import TensorData
from advgeom.errors import DataError
from advgeom.registry import register
from advgeom.seeding import make_generator

_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# ---------------------------------------------------------------------------
# sampling


def _device(generator: torch.Generator | None, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def sample_sphere(n: int, d: int, radius: float | Tensor = 1.0, *,
                  generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32,
                  device: str | torch.device | None = None) -> Tensor:
    """``n`` points uniform on the sphere of radius ``radius`` in R^d (x = r z/||z||).

    ``radius`` may be a float or a tensor of shape (n,) (one radius per point). The
    points live on ``device``, by default the generator's device (else the CPU).
    """
    device = _device(generator, device)
    if n < 0 or d < 1:
        raise DataError(f"spheres: need n >= 0 and d >= 1, got n={n}, d={d}")
    z = torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    norms = z.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    r = torch.as_tensor(radius, dtype=dtype, device=device)
    if r.dim() == 1:
        r = r.unsqueeze(1)
    return r * z / norms


def sample_spheres(n: int, d: int, R: float, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32,
                   device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """A balanced, shuffled sample of both spheres: ``n//2`` inner (y=0), the rest outer (y=1)."""
    device = _device(generator, device)
    labels = torch.zeros(n, dtype=torch.int64, device=device)
    labels[n // 2:] = 1
    labels = labels[torch.randperm(n, generator=generator, device=device)]
    radius = torch.where(labels == 1, float(R), 1.0).to(dtype)
    return sample_sphere(n, d, radius, generator=generator, dtype=dtype, device=device), labels


def max_margin_predict(x: Tensor, R: float) -> Tensor:
    """The max-margin reference classifier: label 1 iff ||x|| > (1+R)/2 (Section 2)."""
    return (x.norm(dim=-1) > (1.0 + float(R)) / 2.0).to(torch.int64)


# ---------------------------------------------------------------------------
# data set objects


@dataclass
class SphereData(TensorData):
    """A fixed sample of the two spheres; ``images`` are N x d coordinates in [-R, R]
    (not in [0,1]: see the module docstring), ``labels`` int64 with 1 = outer sphere."""

    d: int = 500
    R: float = 1.3

    def subset(self, n: int | None = None, *, indices: Tensor | None = None) -> "SphereData":
        """First ``n`` samples, or the given ``indices`` (keeps ``d`` and ``R``)."""
        idx = indices if indices is not None else torch.arange(min(n or len(self), len(self)))
        return SphereData(self.images[idx], self.labels[idx], self.num_classes, self.name,
                          self.split, self.classes, d=self.d, R=self.R)


@dataclass
class OnlineSphereData(SphereData):
    """The online regime: ``sample_batch`` returns a fresh balanced uniform batch each call.

    ``images``/``labels`` still hold a fixed sample (useful for evaluation and for code
    that needs a finite data set), but a training loop should call ``sample_batch``.
    """

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None
                     ) -> tuple[Tensor, Tensor]:
        """``batch_size`` fresh points, half from each sphere, shuffled (paper Section 2)."""
        if batch_size < 1:
            raise DataError(f"spheres: batch_size must be >= 1, got {batch_size}")
        return sample_spheres(batch_size, self.d, self.R, generator=generator,
                              dtype=self.images.dtype, device=self.images.device)

    def subset(self, n: int | None = None, *, indices: Tensor | None = None) -> "OnlineSphereData":
        base = SphereData.subset(self, n, indices=indices)
        return OnlineSphereData(base.images, base.labels, base.num_classes, base.name,
                                base.split, base.classes, d=self.d, R=self.R)


@register("dataset", "spheres")
def spheres(split: str = "train", *, d: int = 500, R: float = 1.3, n: int = 10000,
            seed: int = 0, online: bool = False, dtype: str = "float32",
            **_: object) -> SphereData:
    """Concentric spheres (adversarial-spheres.txt): ``n`` points, balanced, seeded.

    ``split`` selects an independent seed stream (train, val and test never share
    points for the same ``seed``). ``online=True`` (or ``n=0``) returns an
    :class:`OnlineSphereData` whose ``sample_batch`` gives fresh samples every training
    step (its fixed ``images`` then hold ``n`` points, possibly none). Coordinates are
    in [-R, R], not [0,1].
    """
    if split not in _SPLIT_OFFSET:
        raise DataError(f"spheres: unknown split {split!r}; use train, val or test")
    if int(d) < 1:
        raise DataError(f"spheres: d must be >= 1, got {d}")
    if not float(R) > 1.0:
        raise DataError(f"spheres: the outer radius R must be > 1, got {R}")
    if int(n) < 0:
        raise DataError(f"spheres: n must be >= 0, got {n}")
    if dtype not in _DTYPES:
        raise DataError(f"spheres: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    gen = make_generator(1_000_003 * int(seed) + 7919 * _SPLIT_OFFSET[split] + 17)
    x, y = sample_spheres(int(n), int(d), float(R), generator=gen, dtype=_DTYPES[dtype])
    cls = OnlineSphereData if online or int(n) == 0 else SphereData
    return cls(x, y, 2, name="spheres", split=split, classes=("inner", "outer"),
               d=int(d), R=float(R))
