"""Numerical checks of the theory of sparsification-robustness.txt: Theorem 2 (layer-wise
l-inf bounds eps * prod gamma) on trained and random networks, Theorem 1 (ReLU switch
flips vs eps and input dimension) and the Section 3.1 attenuation K/N of a linear
classifier behind a K-term projection."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from advgeom.analysis import layer_bounds as LB
from advgeom.analysis import switches as SW
from advgeom.analysis.locally_linear import linear_attenuation
from advgeom.experiments import sparsity as S
from advgeom.experiments.base import Comparison, Context, Outcome, experiment
from advgeom.experiments.settings import assumption, paper
from advgeom.experiments.smoke import SMOKE_POINTS
from advgeom.experiments.sparsity import (
    EPS,
    PAPER,
    RHO,
    SETTINGS,
    cnn_config,
    fc2_config,
    test_points,
)
from advgeom.nn.wavelet import SparsifyingFrontEnd
from advgeom.registry import get
from advgeom.results.plots import save_figure


def _bar_bounds(cases: dict[str, list[LB.LayerBound]], path: Any) -> Any:
    fig = Figure(figsize=(4.0 * len(cases), 3.8))
    for i, (title, rows) in enumerate(cases.items(), start=1):
        ax = fig.add_subplot(1, len(cases), i)
        pos = np.arange(len(rows))
        ax.bar(pos - 0.2, [r.bound for r in rows], 0.4, label="eps * prod gamma (Thm 2)")
        ax.bar(pos + 0.2, [max(r.measured, 1e-12) for r in rows], 0.4, label="measured max ||e_j||_inf")
        ax.set_xticks(pos, [r.name or "?" for r in rows], rotation=30, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _lines(panels: dict[str, tuple[list[float], dict[str, list[float]], str, bool]], path: Any) -> Any:
    fig = Figure(figsize=(4.6 * len(panels), 3.8))
    for i, (title, (xs, ys, xlabel, logx)) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for label, v in ys.items():
            ax.plot(xs, v, marker="o", label=label)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _worst_ratio(rows: list[LB.LayerBound]) -> float:
    """Largest measured/bound over the weight layers (a normalization layer is trivially tight)."""
    return max(r.ratio for r in rows if not r.name.endswith("normalize"))


def _sign_noise(gen: torch.Generator) -> Callable[[Tensor, float], Tensor]:
    return lambda x, e: (x + e * (torch.randint(0, 2, x.shape, generator=gen).to(x) * 2 - 1)).clamp(0, 1)


@experiment("sparsity-theory", title="Theorem 1 switches, Theorem 2 layer bounds, K/N attenuation",
            paper=PAPER, reference=None)
def theory(ctx: Context) -> Outcome:
    """Numerical checks of Sections 3.1, 3.4 and 4 on trained and random networks."""
    S.record_training(ctx, cnn=True, fc2=True, l1=True)
    n = SETTINGS[ctx.profile]["theory_n"]
    ctx.setting("test points", n, assumption(f"the first {n} MNIST test images (3-vs-7 for fc2): numerical checks "
                                             "of the theorems, whose size the paper does not fix"))
    ctx.setting("eps (linf)", EPS, paper("Section 5.2: eps = 0.25"))
    ctx.setting("random network", "784-256-128-64-10, 20% of the weights kept; Theorem 1 layers of 100 units, "
                "N up to 4096", assumption("illustrations of Theorems 1 and 2 on random networks (not in the paper)"))
    s = ctx.capped(SETTINGS[ctx.profile], theory_n=SMOKE_POINTS)
    comps, figs, notes = [], [], []
    x, y = test_points("mnist", s["theory_n"], ctx.device)
    ll = get("attack", "locally_linear")
    # Theorem 2: trained fc2 (no defense vs l1) and a random deep ReLU network
    cases: dict[str, list[LB.LayerBound]] = {}
    for defense in ("none", "sparse_network"):
        model = ctx.train(fc2_config(ctx.profile, "mnist", defense))
        for how, xa in (("locally linear", ll(model, x, y, eps=EPS)),
                        ("random signs", _sign_noise(ctx.generator(defense))(x, EPS))):
            rows = LB.theorem2(model, x, xa)
            cases[f"fc2/{defense}, {how}"] = rows
            comps.append(Comparison(f"Thm 2 fc2/{defense} {how}: max measured/bound", _worst_ratio(rows),
                                    None, unit="", note="weight layers; <= 1 required"))
        comps.append(Comparison(f"fc2/{defense}: prod gamma (output layer)",
                                float(np.prod([g for _, g in LB.layer_gammas(model)])), None, unit=""))
    net = LB.random_relu_network([784, 256, 128, 64, 10], generator=ctx.generator("net"), keep=0.2, scale=2.0)
    rows = LB.theorem2(net, x.flatten(1).cpu(), _sign_noise(ctx.generator("net-e"))(x, EPS).flatten(1).cpu())  # net on CPU
    cases["random 784-256-128-64-10 (20% weights)"] = rows
    comps.append(Comparison("Thm 2 random network: max measured/bound", _worst_ratio(rows), None,
                            unit="", note="<= 1 required"))
    figs.append(_bar_bounds(cases, ctx.figure_path("theorem2_layer_bounds")))

    # Theorem 1 / switches: trained networks vs eps, random layers vs dimension
    eps = [0.01, 0.05, 0.1, 0.2, 0.3]
    cnn = ctx.train(cnn_config(ctx.profile, False))
    fc = ctx.train(fc2_config(ctx.profile, "mnist", "none"))
    xc, yc = test_points("cnn", s["theory_n"], ctx.device)
    trained = {}
    for name, model, xx, yy in (("cnn", cnn, xc, yc), ("fc2", fc, x, y)):
        for how, fn in (("LL", lambda a, e, m=model, t=yy: ll(m, a, t, eps=e)),
                        ("random", _sign_noise(ctx.generator(name)))):
            for kind, v in SW.flip_curve(model, xx, fn, eps).items():
                trained[f"{name} {kind}, {how}"] = v
    dims = [16, 64, 256, 1024, 4096]
    gen = ctx.generator("thm1")
    rand = {label: [SW.theorem1_trial(n, 100, 0.05, bias_margin=bm, samples=200, generator=gen)["flip_fraction"]
                    for n in dims] for label, bm in (("Assumption 2 biases (C=0.02)", 0.02), ("N(0,1) biases", None))}
    figs.append(_lines({"trained nets: flipped switch fraction": (eps, trained, "eps", False),
                        "random layer, delta=0.05, worst-case e": (dims, rand, "input dimension N", True)},
                       ctx.figure_path("switch_flips")))
    comps += [Comparison(f"flipped fraction {k} at eps 0.1", v[eps.index(0.1)], None, unit="")
              for k, v in trained.items() if "relu" in k]
    comps += [Comparison(f"random layer {k}, N={dims[-1]}: flipped fraction", v[-1], None, unit="")
              for k, v in rand.items()]

    # Section 3.1: linear classifier behind a K-term projection, attenuation vs K/N
    rhos = [0.01, 0.03, 0.1, 0.3]
    w = torch.randn(x.shape, generator=ctx.generator("w"), dtype=torch.float64)
    att: dict[str, list[float]] = {}
    for wav in ("db4", "bior4.4"):
        for rho in rhos:
            fe = SparsifyingFrontEnd(wav, 1, rho)
            xd = x.double()
            r = linear_attenuation(lambda v: fe.project(v, xd), w,
                                   adjoint_project=lambda v: fe.project(v, xd, adjoint=True))
            att.setdefault(f"{wav} semi-white", []).append(float(r["semi_white"].mean()))
            att.setdefault(f"{wav} white", []).append(float(r["white"].mean()))
            if rho == RHO:
                comps.append(Comparison(f"{wav}: semi-white attenuation at rho 3% (paper: K/N)",
                                        att[f"{wav} semi-white"][-1], fe.k / fe.n, unit=""))
                comps.append(Comparison(f"{wav}: white-box attenuation at rho 3%", att[f"{wav} white"][-1],
                                        None, unit="", note="O(K polylog N / N)"))
    att["K/N"] = [num / 784 for num in [SparsifyingFrontEnd(rho=r).k for r in rhos]]
    figs.append(_lines({"linear classifier: Delta / (eps ||w||_1)": (att["K/N"], att, "K/N", True)},
                       ctx.figure_path("attenuation")))
    notes.append(f"{len(y)} MNIST test points (3-vs-7 for fc2, 10 classes for the CNN) and their wavelet "
                 "supports; random Gaussian w for the linear classifier; Theorem 1 layers with M=100 units.")
    return Outcome(comps, figs, notes)
