"""Plots as pure functions of result rows or arrays -> PNG path (matplotlib, Agg
canvas; no pyplot global state): accuracy-vs-eps curves and histograms of minimal
adversarial perturbations."""
from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from advgeom.errors import AdvgeomError
from advgeom.results.rows import Row


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (parents created) and release it from pyplot if it was
    made there; returns the path."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise AdvgeomError(f"plot path must end in .png, got {p}")
    p.parent.mkdir(parents=True, exist_ok=True)
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(p, dpi=120)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return p


def _as_array(v: object) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(v, dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------------------
# curves


def plot_curves(eps: Sequence[float], curves: Mapping[str, Sequence[float]], path: str | Path, *,
                xlabel: str = "eps", ylabel: str = "accuracy (%)", title: str = "") -> Path:
    """One line per label over a shared eps grid."""
    if not curves:
        raise AdvgeomError("nothing to plot: no curves")
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for label, ys in curves.items():
        ys = _as_array(ys)
        if len(ys) != len(eps):
            raise AdvgeomError(f"curve {label!r} has {len(ys)} points for {len(eps)} eps values")
        style = dict(color="black", linestyle="--", linewidth=2) if label.endswith("worst_case") else {}
        ax.plot(list(eps), ys, marker="o" if len(eps) < 30 else None, label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def accuracy_curves(rows: Iterable[Row], metric: str = "robust_accuracy"
                    ) -> dict[str, tuple[list[float], list[float]]]:
    """``{label: (eps, accuracy)}`` from rows; the clean accuracy (attack ``none``) is
    the eps=0 point of every curve of the same model/defense. Labels name the model and
    defense only when the rows hold several."""
    rows = list(rows)
    sel = [r for r in rows if r.metric == metric]
    clean = {(r.model, r.defense): r.value for r in rows if r.metric == "clean_accuracy"}
    many = len({(r.model, r.defense) for r in sel}) > 1
    pts: dict[str, dict[float, float]] = defaultdict(dict)
    for r in sel:
        label = f"{r.model}/{r.defense}: {r.attack}" if many else r.attack
        pts[label][float(r.eps)] = float(r.value)
        if metric == "robust_accuracy" and (r.model, r.defense) in clean:
            pts[label].setdefault(0.0, clean[(r.model, r.defense)])
    return {k: (sorted(v), [v[e] for e in sorted(v)]) for k, v in pts.items()}


def plot_accuracy_vs_eps(rows: Iterable[Row], path: str | Path, *, metric: str = "robust_accuracy",
                         title: str = "") -> Path:
    """Accuracy against eps, one line per attack (the worst case dashed)."""
    rows = list(rows)
    curves = accuracy_curves(rows, metric)
    if not curves:
        raise AdvgeomError(f"no {metric!r} rows to plot")
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for label, (eps, acc) in curves.items():
        style = dict(color="black", linestyle="--", linewidth=2) if label.endswith("worst_case") else {}
        ax.plot(eps, acc, marker="o", label=label, **style)
    norms = sorted({r.norm for r in rows if r.norm})
    ax.set_xlabel(f"eps ({', '.join(norms)})" if norms else "eps")
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title or metric.replace("_", " ") + " vs eps")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------
# minimal perturbations


def plot_min_norm_histogram(distances: Mapping[str, object], path: str | Path, *, bins: int = 30,
                            title: str = "minimal adversarial perturbations") -> Path:
    """One panel per norm (``{"l2": array, "linf": array}``): histogram of the finite
    distances; failures (inf) are counted in the panel title, zeros are the already
    misclassified samples."""
    if not distances:
        raise AdvgeomError("nothing to plot: no distances")
    fig = Figure(figsize=(4.5 * len(distances), 3.6))
    for i, (name, values) in enumerate(distances.items(), start=1):
        d = _as_array(values)
        finite = d[np.isfinite(d)]
        ax = fig.add_subplot(1, len(distances), i)
        if finite.size:
            ax.hist(finite, bins=bins, color="tab:blue", alpha=0.8)
            med = float(np.median(finite))
            ax.axvline(med, color="black", linestyle="--", label=f"median {med:.3g}")
            ax.legend(fontsize=8)
        failed = int(d.size - finite.size)
        ax.set_title(f"{name} (n={d.size}, failed={failed})", fontsize=9)
        ax.set_xlabel(f"||delta||_{name[1:] if name.startswith('l') else name}")
        ax.set_ylabel("samples")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def min_norm_curve(distances: object, eps: Sequence[float]) -> list[float]:
    """Accuracy (%) at each eps implied by per-sample minimal distances: a sample
    counts as robust when its distance exceeds eps (0 = already misclassified,
    inf = attack failed)."""
    d = _as_array(distances)
    if d.size == 0:
        return [math.nan for _ in eps]
    return [int((d > e).sum()) * 100 / d.size for e in eps]
