"""Figures 1-5 of spectral-norm-adversarial-training.txt and the Theorem 1 check, as
data (JSON-ready dicts of lists, cached per model by the experiments) and plots.

- :func:`spectrum_data`  Figure 1: mean singular values of ``J_f(x)`` per rank, and
  ``|cos(delta, v_r)|`` per rank for adversarial and random perturbations.
- :func:`linearity_data` Figures 2 / 4: deviation from linearity of the penultimate
  layer ``phi^{L-1}`` and ``sigma_max(J_f(x + z))`` against ``||z||_2`` along random
  and adversarial (l2 or linf PGA) directions.
- :func:`alignment_data` Figures 3 / 5 (right): ``|cos(delta(eps), v_1)|`` against eps.
- :func:`theorem1_data`  relative gradient gap of PGA-AT vs data-dependent SNR.
- :func:`figure_training` the training curves (loss, monitored accuracies) of every run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from advgeom.analysis import jacobian as JA
from advgeom.attacks.pgd import pgd
from advgeom.defenses.spectral import theorem1_gap
from advgeom.results.plots import save_figure

ATTACK_STEPS = 10  # the paper's PGA iterations


def pga_step(eps: float, norm: str, steps: int = ATTACK_STEPS) -> float | None:
    """The PGA step: l2 2 eps / steps (Table 1's alpha = 2 eps / ITERS); linf ``None``
    (advgeom's default 2.5 eps / steps: the paper gives no linf step)."""
    return 2.0 * eps / steps if norm == "l2" else None


def perturbation(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                 generator: torch.Generator, steps: int = ATTACK_STEPS) -> Tensor:
    """``x_adv - x`` of a ``steps``-step PGA (the paper's 10, :func:`pga_step`), every
    sample taking every step."""
    step = pga_step(eps, norm, steps)
    return pgd(model, x, y, eps=eps, norm=norm, steps=steps, step_size=step,
               early_stop=False, generator=generator) - x


def _stats(t: Tensor) -> tuple[list[float], list[float]]:
    """Mean and standard error over the sample axis (the last one)."""
    t = t.double()
    se = t.std(dim=-1) / max(t.shape[-1], 1) ** 0.5 if t.shape[-1] > 1 else torch.zeros_like(t[..., 0])
    return t.mean(-1).tolist(), se.tolist()


def spectrum_data(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                  generator: torch.Generator, steps: int = ATTACK_STEPS) -> dict[str, Any]:
    """Figure 1 for one model: ``sv`` (mean per rank of the singular values of ``J_f``
    at the clean points), ``sv_adv`` (at their PGA perturbations: Section 5.2 repeats
    the spectrum 'for clean and corresponding adversarially perturbed' examples),
    ``align`` (adversarial) and ``align_random`` (random directions), with standard errors."""
    s, vh = JA.spectrum(JA.jacobians(model, x), vectors=True)
    delta = perturbation(model, x, y, eps, norm, generator, steps)
    s_adv = JA.spectrum(JA.jacobians(model, x + delta))
    adv = JA.alignment(delta, vh)
    rnd = JA.alignment(JA.random_directions(x, generator), vh)
    sv, sv_se = _stats(s.T)
    sa, sa_se = _stats(s_adv.T)
    a, a_se = _stats(adv.T)
    r, r_se = _stats(rnd.T)
    return {"sv": sv, "sv_se": sv_se, "sv_adv": sa, "sv_adv_se": sa_se, "align": a, "align_se": a_se,
            "align_random": r, "align_random_se": r_se}


def linearity_data(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                   radii: Sequence[float], generator: torch.Generator,
                   steps: int = ATTACK_STEPS) -> dict[str, Any]:
    """Figures 2 / 4 for one model: for each radius, the deviation from linearity of the
    penultimate layer and the largest singular value of ``J_f`` at ``x + r d``, with
    ``d`` random or the direction of a PGA perturbation of radius ``eps``."""
    phi = getattr(model, "features", model)
    dirs = {"random": JA.random_directions(x, generator),
            "adversarial": JA._unit(perturbation(model, x, y, eps, norm, generator, steps))}
    out: dict[str, Any] = {"radii": list(radii)}
    for name, d in dirs.items():
        dev = torch.stack([JA.linearity_deviation(phi, x, r * d) for r in radii])
        sig = JA.top_singular_along(model, x, d, list(radii))
        out[f"dev_{name}"], out[f"dev_{name}_se"] = _stats(dev)
        out[f"sigma_{name}"], out[f"sigma_{name}_se"] = _stats(sig)
    return out


def alignment_data(model: nn.Module, x: Tensor, y: Tensor, eps_grid: Sequence[float], norm: str,
                   generator: torch.Generator, steps: int = ATTACK_STEPS) -> dict[str, Any]:
    """Figures 3 / 5 (right): ``|cos(delta(eps), v_1)|`` per eps, and for random directions."""
    _, vh = JA.spectrum(JA.jacobians(model, x), vectors=True)
    top = vh[:, :1]
    adv = torch.stack([JA.alignment(perturbation(model, x, y, e, norm, generator, steps), top)[:, 0]
                       for e in eps_grid])
    rnd = JA.alignment(JA.random_directions(x, generator), top)[:, 0]
    a, a_se = _stats(adv)
    return {"eps": list(eps_grid), "align": a, "align_se": a_se, "align_random": _stats(rnd)[0]}


def theorem1_data(eps_list: Sequence[float], alpha_factors: Sequence[float], *, seed: int = 0,
                  iters: int = 10) -> dict[str, Any]:
    """Relative parameter-gradient gap of PGA-AT (sum of squares) vs data-dependent SNR
    on a constructed ReLU net (784-64-64-10, float64, 16 points): one curve per eps over
    ``alpha = factor * eps``."""
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                            nn.Linear(64, 10)).double()
    finally:
        torch.random.set_rng_state(torch_state)
    x = torch.rand(16, 784, generator=g, dtype=torch.float64)
    v0 = torch.randn(16, 784, generator=g, dtype=torch.float64)
    gaps = {str(e): [theorem1_gap(net, x, eps=e, alpha=f * e, iters=iters, v0=v0) for f in alpha_factors]
            for e in eps_list}
    return {"alpha_factors": list(alpha_factors), "gaps": gaps}


# ---------------------------------------------------------------------------
# plots


def _panel(ax: Any, xs: Sequence[float], curves: Mapping[str, Any], *, xlabel: str, ylabel: str,
           title: str, logy: bool = False, vline: float | None = None) -> None:
    for label, (ys, se, style) in curves.items():
        ys, se = np.asarray(ys, float), np.asarray(se if se is not None else np.zeros(len(ys)), float)
        line = ax.plot(list(xs), ys, label=label, **style)[0]
        ax.fill_between(list(xs), ys - se, ys + se, color=line.get_color(), alpha=0.2)
    if logy:
        ax.set_yscale("log")
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def two_panels(path: Path, left: dict[str, Any], right: dict[str, Any], suptitle: str) -> Path:
    """A 1x2 figure; each panel ``{"xs", "curves": {label: (ys, se, style)}, "xlabel", ...}``."""
    fig = Figure(figsize=(11, 4.2))
    for i, panel in enumerate((left, right)):
        ax = fig.add_subplot(1, 2, i + 1)
        _panel(ax, panel["xs"], panel["curves"], **{k: v for k, v in panel.items()
                                                     if k not in ("xs", "curves")})
    fig.suptitle(suptitle, fontsize=10)
    return save_figure(fig, path)


def figure1(path: Path, data: Mapping[str, dict[str, Any]], title: str) -> Path:
    """Singular value spectrum (clean points solid, their adversarial perturbations
    dashed) and alignment vs rank, per training method."""
    ranks = list(range(1, len(next(iter(data.values()))["sv"]) + 1))
    left: dict[str, Any] = {}
    for i, (m, d) in enumerate(data.items()):
        left[m] = (d["sv"], d["sv_se"], {"color": f"C{i}"})
        if "sv_adv" in d:   # figure data cached before the adversarial spectrum have none
            left[f"{m} (adversarial)"] = (d["sv_adv"], d["sv_adv_se"], {"color": f"C{i}", "linestyle": "--"})
    right = {m: (d["align"], d["align_se"], {}) for m, d in data.items()}
    first = next(m for m in data if m != "random net")
    right["random perturbation"] = (data[first]["align_random"], data[first]["align_random_se"],
                                    {"color": "black", "linestyle": ":"})
    return two_panels(path, dict(xs=ranks, curves=left, xlabel="rank r", ylabel="singular value of J_f(x)",
                                 title="singular value spectrum", logy=True),
                      dict(xs=ranks, curves=right, xlabel="rank r", ylabel="|cos(delta, v_r)|",
                           title="alignment of adversarial perturbations with v_r"), title)


def figure_linearity(path: Path, data: Mapping[str, dict[str, Any]], eps: float, title: str) -> Path:
    """Figures 2 / 4: deviation from linearity and sigma_max along random and adversarial z."""
    radii = next(iter(data.values()))["radii"]
    left: dict[str, Any] = {}
    right: dict[str, Any] = {}
    for i, (m, d) in enumerate(data.items()):
        for kind, ls in (("random", ":"), ("adversarial", "-")):
            style = {"color": f"C{i}", "linestyle": ls}
            left[f"{m} ({kind})"] = (d[f"dev_{kind}"], d[f"dev_{kind}_se"], style)
            right[f"{m} ({kind})"] = (d[f"sigma_{kind}"], d[f"sigma_{kind}_se"], style)
    return two_panels(path, dict(xs=radii, curves=left, xlabel="||z||_2",
                                 ylabel="||phi(x+z) - phi(x) - J z||", title="deviation from linearity",
                                 vline=eps),
                      dict(xs=radii, curves=right, xlabel="||z||_2", ylabel="sigma_max(J_f(x+z))",
                           title="largest singular value along z", vline=eps), title)


def figure_accuracy(path: Path, eps_grid: Sequence[float], accuracy: Mapping[str, Sequence[float]],
                    align: Mapping[str, dict[str, Any]], eps: float, xlabel: str, title: str) -> Path:
    """Figures 3 / 5: accuracy vs eps and alignment with v_1 vs eps."""
    left = {m: (a, None, {}) for m, a in accuracy.items()}
    right: dict[str, Any] = {m: (d["align"], d["align_se"], {}) for m, d in align.items()}
    rnd = float(np.mean(next(iter(align.values()))["align_random"]))  # independent of eps
    right["random perturbation"] = ([rnd] * len(eps_grid), None, {"color": "black", "linestyle": ":"})
    return two_panels(path, dict(xs=eps_grid, curves=left, xlabel=xlabel, ylabel="accuracy (%)",
                                 title="accuracy under PGA", vline=eps),
                      dict(xs=eps_grid, curves=right, xlabel=xlabel, ylabel="|cos(delta, v_1)|",
                           title="alignment with the dominant singular vector", vline=eps), title)


def figure_theorem1(path: Path, data: dict[str, Any]) -> Path:
    """Relative gradient gap vs alpha / eps, one line per eps (log-log)."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for e, gaps in data["gaps"].items():
        ax.loglog(data["alpha_factors"], np.maximum(np.asarray(gaps), 1e-16), marker="o", label=f"eps={e}")
    ax.set_xlabel("alpha / eps")
    ax.set_ylabel("||g_AT - g_SNR|| / ||g_SNR||")
    ax.set_title("Theorem 1: PGA-AT (sum of squares) -> data-dependent SNR", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def figure_training(path: Path, histories: Mapping[str, Sequence[Mapping[str, float]]], title: str) -> Path:
    """Training curves of every run: the loss (each record the mean over its window)
    against the step, and, where a run had the monitor, its held-out clean (dotted) and
    robust (solid) accuracy."""
    monitored = any("monitor_robust" in h for hist in histories.values() for h in hist)
    fig = Figure(figsize=(11 if monitored else 5.5, 4.2))
    ax = fig.add_subplot(1, 2 if monitored else 1, 1)
    for i, (label, hist) in enumerate(histories.items()):
        pts = [(h["step"], h["loss"]) for h in hist if "loss" in h]
        if pts:
            ax.plot(*zip(*pts), color=f"C{i % 10}", label=label)
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="training loss (mean since the last record)", title="loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if monitored:
        right = fig.add_subplot(1, 2, 2)
        for i, (label, hist) in enumerate(histories.items()):
            mon = [h for h in hist if "monitor_robust" in h]
            if mon:
                steps = [h["step"] for h in mon]
                right.plot(steps, [100 * h["monitor_clean"] for h in mon], color=f"C{i % 10}", linestyle=":")
                right.plot(steps, [100 * h["monitor_robust"] for h in mon], color=f"C{i % 10}", marker="o",
                           markersize=3, label=label)
        right.set(xlabel="training step", ylabel="held-out accuracy (%)",
                  title="monitor: clean (dotted), l2 PGA-10 (solid)")
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
