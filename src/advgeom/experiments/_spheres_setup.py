"""Settings, training configs and measurement helpers shared by the spheres
experiments (adversarial-spheres.txt); the experiments themselves are in
``advgeom.experiments.spheres``.

Profiles: ``paper`` uses the paper's settings (d = 500, R = 1.3, 2 x 1000 ReLU net
with batch norm, quadratic net h = 1000, Adam 1e-4, batch 50, 1e6 steps, 20M random
samples, 100 attack points with 1000 manifold steps of 0.001). ``quick`` runs on 2 CPU
cores in minutes: d = 100, nets of width 256 (quadratic h = 200), 1e3-1e4 steps, Adam
1e-3 for the quadratic nets (1e-4 converges too slowly in 1e4 steps), 1e5 random samples.
Distances to errors scale like 1/sqrt(d), so quick distances are not the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advgeom.attacks.manifold import manifold_attack, predict
from advgeom.data.spheres import sample_sphere
from advgeom.experiments.settings import Source, assumption, paper
from advgeom.train import TrainConfig


@dataclass(frozen=True)
class SphereSettings:
    d: int
    R: float = 1.3
    # Section 3: the ReLU net
    relu_width: int = 1000
    relu_depth: int = 2
    relu_steps: int = 1_000_000
    relu_lr: float = 1e-4
    random_samples: int = 10_000_000       # per sphere
    attack_points: int = 100
    attack_steps: int = 1000
    attack_step: float = 0.001
    shell_points: int = 100
    sweep_dims: tuple[int, ...] = (10, 20, 40, 60, 80, 100, 200)
    sweep_steps: int = 100_000
    sweep_points: int = 50
    # Section 4: the quadratic net
    quad_hidden: int = 1000
    quad_lr: float = 1e-4
    quad_steps: int = 1_000_000
    quad_n: int = 1_000_000
    quad_early_steps: tuple[int, ...] = (2000, 10000)
    mc_samples: int = 10_000_000
    perfect_d: int = 500
    perfect_hidden: int = 1000
    perfect_lr: float = 1e-4
    perfect_steps: int = 10_000
    perfect_eval_every: int = 100
    perfect_n_eval: int = 10_000
    # Section 5 / Figure 5
    large_width: int = 2000
    large_depth: int = 8
    bound_sizes: tuple[int, ...] = (1000, 5000, 10000, 100000, 0)   # 0 = online
    bound_snapshots: tuple[int, ...] = (1000, 3000, 10000, 30000, 100000)
    bound_error_samples: int = 100_000
    bound_points: int = 100
    # Figures 1 and 2
    slice_resolution: int = 301
    norm_step: float = 0.05
    norm_samples: int = 10_000
    norm_attack_points: int = 20
    d2_n: int = 100
    d2_steps: int = 20_000
    # Figure 4
    dim_grid: tuple[int, ...] = tuple(range(100, 5001, 100))
    dim_targets: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-14)
    checkpoint_every: int = 10_000


PAPER = SphereSettings(d=500)
QUICK = SphereSettings(
    d=100, relu_width=256, relu_steps=10_000, random_samples=100_000, shell_points=50,
    sweep_dims=(5, 20, 60), sweep_steps=3000, sweep_points=20,
    quad_hidden=200, quad_lr=1e-3, quad_steps=10_000, quad_n=50_000, quad_early_steps=(500, 2000),
    mc_samples=200_000, perfect_d=200, perfect_hidden=400, perfect_lr=1e-3, perfect_steps=1000,
    perfect_eval_every=50, perfect_n_eval=2000,
    large_width=256, bound_sizes=(1000, 0), bound_snapshots=(300, 1500),
    bound_error_samples=20_000, bound_points=50,
    slice_resolution=161, norm_step=0.1, norm_samples=2000, norm_attack_points=8,
    d2_steps=3000, dim_grid=tuple(range(100, 5001, 300)), checkpoint_every=1000)
SETTINGS: dict[str, SphereSettings] = {"quick": QUICK, "paper": PAPER}


# Where each SphereSettings field comes from in the paper profile (adversarial-spheres.txt);
# a quick value that differs from the paper's is an assumption (QUICK_WHY).
S3 = ("Section 3: 2 hidden layers of 1000 ReLU units with batch normalization, Adam, batch 50, lr 0.0001, "
      "1 million steps")
ATTACK = "Section 5: 100 random points, PGD of 1000 steps of .001 on the manifold (Section 3.1's manifold attack)"
FIELD_SOURCES: dict[str, Source] = {
    "d": paper("Section 3: d = 500"), "R": paper("Section 2: R = 1.3"),
    "relu_width": paper(S3), "relu_depth": paper(S3), "relu_steps": paper(S3), "relu_lr": paper(S3),
    "random_samples": paper("Section 3: 10 million uniform samples from each sphere"),
    "attack_points": paper(ATTACK), "attack_steps": paper(ATTACK), "attack_step": paper(ATTACK),
    "shell_points": assumption("the paper gives no count for the nearest other-class point between the spheres"),
    "sweep_dims": assumption("Section 3 does not list the dimensions at which no adversarial error is found"),
    "sweep_steps": assumption("the paper gives no training length for the dimension sweep"),
    "sweep_points": assumption("the paper gives no number of attacked points for the dimension sweep"),
    "quad_hidden": paper("Section 4: the quadratic network with h = 1000"),
    "quad_lr": paper("Section 4: 'the same setup as in Section 3' (Adam, lr 0.0001)"),
    "quad_steps": paper("Section 4: the setup of Section 3 (1 million steps)"),
    "quad_n": paper("Section 4: a fixed finite training set of N = 10^6 points"),
    "quad_early_steps": assumption("snapshots early in training, before the alpha_i settle (not in the paper)"),
    "mc_samples": paper("Section 4: 10 million random points from each sphere"),
    "perfect_d": paper("Section 4: the perfect initialization of the d = 500 quadratic network"),
    "perfect_hidden": paper("Section 4: h = 1000"), "perfect_lr": paper("Section 4: the setup of Section 3"),
    "perfect_steps": assumption("Figure 3: errors reappear after 1000 steps; 10,000 steps show the divergence"),
    "perfect_eval_every": assumption("the cadence of Figure 3's loss curves (not in the paper)"),
    "perfect_n_eval": assumption("the test points of Figure 3's average loss (not in the paper)"),
    "large_width": paper("Section 5: the large ReLU network, 2000 hidden units, depth 8"),
    "large_depth": paper("Section 5: the large ReLU network, 2000 hidden units, depth 8"),
    "bound_sizes": paper("Section 5: N in {1000, 5000, 10000, 100000, infinity}"),
    "bound_snapshots": assumption("Section 5 samples the networks 'several times during training' without saying when"),
    "bound_error_samples": paper("Section 5: the error rate from 100000 random samples"),
    "bound_points": paper(ATTACK),
    "slice_resolution": assumption("the grid of Figure 1's slices (the paper gives none)"),
    "norm_step": assumption("the spacing of Figure 2's norms (the paper gives none)"),
    "norm_samples": paper("Figure 2: the accuracy among 10000 random samples per norm"),
    "norm_attack_points": assumption("the attacked points per norm of Figure 2 (the paper gives none)"),
    "d2_n": paper("Figure 2 (right): the ReLU net trained on 100 samples at d = 2"),
    "d2_steps": assumption("the paper gives no training length for the d = 2 net"),
    "dim_grid": paper("Figure 4: input dimensions up to 5000"),
    "dim_targets": assumption("Figure 4's target error rates are read from the figure, down to the text's 1e-14"),
}
QUICK_WHY = ("quick profile: scaled to 2 CPU cores in minutes (distances to errors scale like 1/sqrt(d), so "
             "quick distances are not the paper's)")
QUAD_LR_WHY = "quick profile: Adam 1e-3, since 1e-4 converges too slowly in 1e4 steps"


def record_settings(ctx: Any, s: SphereSettings, *names: str, training: bool = True) -> SphereSettings:
    """Record the fields ``names`` of ``s`` (the profile's settings, before ``--smoke`` caps)
    with their sources, and the training recipe shared by every net when ``training``; returns ``s``."""
    for name in names:
        value = getattr(s, name)
        src = FIELD_SOURCES[name]
        if value != getattr(PAPER, name):
            src = assumption(QUAD_LR_WHY if name in ("quad_lr", "perfect_lr") else QUICK_WHY)
        ctx.setting(name, value, src)
    if training:
        ctx.setting("training", "sigmoid cross-entropy, Adam, batch 50; online (a fresh batch each step) unless "
                    "N is set",
                    paper("Section 3: minibatch SGD on the sigmoid cross entropy with Adam, batch 50, online "
                          "sampling (Section 2)"))
    return s


# ---------------------------------------------------------------------------
# training configs


def train_config(s: SphereSettings, model: str, model_kwargs: dict[str, Any], *, steps: int,
                 lr: float, n: int = 0, d: int | None = None, seed: int = 0) -> TrainConfig:
    """Sigmoid cross-entropy, Adam, batch 50 on the spheres; ``n`` = 0 means online."""
    d = s.d if d is None else d
    data = {"d": d, "R": s.R, "seed": seed}
    data.update({"online": True, "n": 100} if n == 0 else {"n": n})
    return TrainConfig(dataset="spheres", dataset_kwargs=data, model=model,
                       model_kwargs={"input_dim": d, **model_kwargs}, objective="bce",
                       optimizer="adam", lr=lr, batch_size=50, iterations=steps,
                       checkpoint_every=min(s.checkpoint_every, steps), seed=seed)


def relu_config(s: SphereSettings, *, steps: int | None = None, n: int = 0, d: int | None = None,
                large: bool = False, seed: int = 0) -> TrainConfig:
    width, depth = (s.large_width, s.large_depth) if large else (s.relu_width, s.relu_depth)
    return train_config(s, "relu_mlp", {"width": width, "depth": depth, "batch_norm": True},
                        steps=steps or s.relu_steps, lr=s.relu_lr, n=n, d=d, seed=seed)


def quad_config(s: SphereSettings, *, steps: int | None = None, n: int = 0, seed: int = 0) -> TrainConfig:
    return train_config(s, "quadratic_net", {"hidden": s.quad_hidden},
                        steps=steps or s.quad_steps, lr=s.quad_lr, n=n, seed=seed)


# ---------------------------------------------------------------------------
# measurements


@torch.no_grad()
def count_errors(model: nn.Module, d: int, radius: float, label: int, n: int,
                 generator: torch.Generator, batch: int = 20_000) -> int:
    """Misclassified points among ``n`` uniform samples of the sphere of ``radius``."""
    errors, done = 0, 0
    while done < n:
        m = min(batch, n - done)
        x = sample_sphere(m, d, radius, generator=generator)
        errors += int((predict(model, x) != label).sum())
        done += m
    return errors


def nearest_error_distances(model: nn.Module, s: SphereSettings, n: int,
                            generator: torch.Generator, d: int | None = None) -> dict[str, Any]:
    """Manifold attack, nearest-error mode, from ``n`` inner-sphere points (Figure 5's
    average distance: ``attack_steps`` steps of ``attack_step``)."""
    d = s.d if d is None else d
    x = sample_sphere(n, d, 1.0, generator=generator)
    y = torch.zeros(n, dtype=torch.int64, device=x.device)
    res = manifold_attack(model, x, y, steps=s.attack_steps, step_size=s.attack_step, mode="nearest")
    found = res.success
    return {"distances": res.distance[found].tolist(), "found": int(found.sum()), "n": n,
            "mean": float(res.distance[found].mean()) if bool(found.any()) else None}


def worst_case_found(model: nn.Module, d: int, R: float, n: int, generator: torch.Generator,
                     steps: int = 500, step_size: float = 0.05) -> dict[str, int]:
    """Worst-case manifold attack (no locality) from ``n`` points of each sphere."""
    out = {}
    for name, r, y in (("inner", 1.0, 0), ("outer", R, 1)):
        x = sample_sphere(n, d, r, generator=generator)
        res = manifold_attack(model, x, torch.full((n,), y, device=x.device), steps=steps,
                              step_size=step_size * r, mode="worst")
        out[name] = int(res.success.sum())
    return out
