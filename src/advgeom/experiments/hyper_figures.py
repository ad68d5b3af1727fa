"""Figures of hyperspherical-defense.txt for the hyper-* experiments: the embedding
space of Fig. 2 (features before the classifier, projected to 2-D by PCA, each point
scaled to unit length as on the hypersphere), the histograms of the angles between
features and class weights that the geodesic rejection thresholds come from, Fig. 2 from
networks whose feature layer has dimension 2 (hyper-features: the true features) and
Appendix A's histogram of the error after projection (Figure 4)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from advgeom.inference import angle_statistics, class_angles
from advgeom.eval.units import device_of
from advgeom.results.plots import save_figure

POINTS = 2000


@torch.no_grad()
def embedding_projection(models: Mapping[str, nn.Module], data: Any, path: Path,
                         points: int = POINTS) -> Path:
    """One panel per model: the first two principal components of the unit-normalized
    features of ``points`` test points, coloured by class."""
    x, y = data.images[:points], data.labels[:points]
    fig = Figure(figsize=(4.5 * len(models), 4.2))
    for i, (name, model) in enumerate(models.items(), start=1):
        f = model.features(x.to(device_of(model, x))).cpu()
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        centered = f - f.mean(0)
        _, _, v = torch.linalg.svd(centered, full_matrices=False)
        xy = (centered @ v[:2].T).numpy()
        ax = fig.add_subplot(1, len(models), i)
        ax.scatter(xy[:, 0], xy[:, 1], c=y.numpy(), cmap="tab10", s=3)
        ax.set_title(f"{name}: unit features, PCA")
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


@torch.no_grad()
def angle_histograms(models: Mapping[str, nn.Module], train: Any, test: Any, path: Path,
                     points: int = POINTS) -> Path:
    """Per model: the angle between each training point's features and its class weight
    (the source of theta_mu and theta_sigma) and, for test points, the angle to the
    predicted class, with the mean p = 1 threshold marked (``points`` of each split)."""
    fig = Figure(figsize=(4.5 * len(models), 3.6))
    xt, yt = train.images[:points], train.labels[:points]
    xs = test.images[:points]
    for i, (name, model) in enumerate(models.items(), start=1):
        dev = device_of(model, xt)
        _, ang = class_angles(model, xt.to(dev))
        own = ang.gather(1, yt.to(dev).unsqueeze(1)).squeeze(1).cpu()
        logits, ang_t = class_angles(model, xs.to(dev))
        pred = ang_t.gather(1, logits.argmax(1, keepdim=True)).squeeze(1).cpu()
        mean, std = angle_statistics(model, xt, yt)
        ax = fig.add_subplot(1, len(models), i)
        ax.hist(own.numpy(), bins=40, alpha=0.6, label="train, own class")
        ax.hist(pred.numpy(), bins=40, alpha=0.6, label="test, predicted class")
        ax.axvline(float((mean + std).nanmean()), color="black", linestyle="--",
                   label="mean threshold (p=1)")
        ax.set_xlabel("angle to W_j (radians)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------
# Fig. 2 with a 2-D feature layer (hyper-features): the true features, no projection


@dataclass(frozen=True)
class FeatureView:
    """What one model's Fig. 2 panels show: the 2-D features of natural test points
    (``feats`` (N, 2), ``labels``), the features along ``x + lambda FGSM`` of one point
    (``trajectory`` (L, 2)), the features of the adversarials that fooled the model
    (``adversarial`` (M, 2)) and, for a SphereCorr head, its class weights (C, 2)."""

    feats: np.ndarray
    labels: np.ndarray
    trajectory: np.ndarray
    adversarial: np.ndarray
    weights: np.ndarray | None = None
    trajectory_digit: int = 3
    adversarial_digit: int = 0


def _scatter_classes(ax: Any, view: FeatureView, xy: np.ndarray) -> None:
    ax.scatter(xy[:, 0], xy[:, 1], c=view.labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=3, alpha=0.6)


def _sphere_guides(ax: Any, view: FeatureView) -> None:
    """The unit circle and the class-weight directions W_j / ||W_j|| of a SphereCorr head."""
    if view.weights is None:
        return
    t = np.linspace(0.0, 2.0 * np.pi, 361)
    ax.plot(np.cos(t), np.sin(t), color="grey", linewidth=0.8)
    for j, w in enumerate(view.weights / np.linalg.norm(view.weights, axis=1, keepdims=True)):
        ax.plot([0.0, 1.08 * w[0]], [0.0, 1.08 * w[1]], color="grey", linewidth=0.6, linestyle=":")
        ax.annotate(str(j), (1.15 * w[0], 1.15 * w[1]), fontsize=7, ha="center", va="center")
    ax.set_aspect("equal")


def feature_panels(views: Mapping[str, FeatureView], path: Path) -> Path:
    """Fig. 2 drawn from true 2-D features, one row per model: left, the natural test
    features coloured by class with the trajectory of ``x + lambda FGSM`` (lambda 0 -> 1,
    purple; the paper's Fig. 2(a)); right, the same features with the adversarials of one
    digit that fooled the model (black crosses; Fig. 2(b) and 2(c))."""
    fig = Figure(figsize=(10.0, 4.6 * len(views)))
    for i, (name, v) in enumerate(views.items()):
        left = fig.add_subplot(len(views), 2, 2 * i + 1)
        _scatter_classes(left, v, v.feats)
        left.plot(v.trajectory[:, 0], v.trajectory[:, 1], color="purple", linewidth=1.6)
        left.scatter(*v.trajectory[0], color="purple", marker="o", s=30, zorder=3)
        left.scatter(*v.trajectory[-1], color="purple", marker="*", s=80, zorder=3)
        left.scatter([0.0], [0.0], color="black", marker="+", s=60, zorder=3)
        left.set_title(f"{name}: 2-D features, x + lambda FGSM of a {v.trajectory_digit} (purple)", fontsize=9)
        right = fig.add_subplot(len(views), 2, 2 * i + 2)
        _scatter_classes(right, v, v.feats)
        if len(v.adversarial):
            right.scatter(v.adversarial[:, 0], v.adversarial[:, 1], color="black", marker="x", s=14,
                          linewidths=0.8, label=f"adversarial {v.adversarial_digit}s that fool it")
            right.legend(fontsize=7, loc="lower right")
        right.set_title(f"{name}: {len(v.adversarial)} fooling adversarials of digit {v.adversarial_digit}",
                        fontsize=9)
        for ax in (left, right):
            _sphere_guides(ax, v)
    return save_figure(fig, path)


def feature_angle_panels(views: Mapping[str, FeatureView], path: Path) -> Path:
    """Per model, the angle of each 2-D feature on the circle (``atan2``; what a
    SphereCorr head sees) as a stacked histogram per class, the fooling adversarials'
    angles (black outline) and the class-weight angles (dotted lines, SphereCorr heads)."""
    fig = Figure(figsize=(9.0, 3.2 * len(views)))
    bins = np.linspace(-np.pi, np.pi, 121)
    cmap = matplotlib.colormaps["tab10"]
    for i, (name, v) in enumerate(views.items(), start=1):
        ax = fig.add_subplot(len(views), 1, i)
        ang = np.arctan2(v.feats[:, 1], v.feats[:, 0])
        classes = sorted(set(v.labels.tolist()))
        ax.hist([ang[v.labels == c] for c in classes], bins=bins, stacked=True,
                color=[cmap(c) for c in classes], label=[str(c) for c in classes])
        if len(v.adversarial):
            ax.hist(np.arctan2(v.adversarial[:, 1], v.adversarial[:, 0]), bins=bins, histtype="step",
                    color="black", linewidth=1.2, label=f"fooling adv. {v.adversarial_digit}s")
        if v.weights is not None:
            for w in v.weights:
                ax.axvline(float(np.arctan2(w[1], w[0])), color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlim(-np.pi, np.pi)
        ax.set_xlabel("feature angle atan2(f2, f1) (radians)")
        ax.set_title(f"{name}: features on the circle", fontsize=9)
        ax.legend(fontsize=6, ncol=6)
    return save_figure(fig, path)


def projection_histogram(errors: np.ndarray, d: float, keep: float, curve: np.ndarray, path: Path) -> Path:
    """Appendix A's Figure 4: the histogram of the Euclidean error after projecting the
    shifted points back onto S^1, the closed form's histogram (``curve``: errors on a
    uniform angle grid) as a line, and the error without projection ``d`` marked."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0.0, max(float(errors.max()), float(curve.max()), d) * 1.02, 61)
    ax.hist(errors, bins=bins, density=True, alpha=0.6, label=f"{len(errors):,} sampled points")
    ax.hist(curve, bins=bins, density=True, histtype="step", color="black", label="closed form")
    ax.axvline(d, color="red", linestyle="--", label=f"error without projection ({d:g})")
    ax.set_xlabel("Euclidean error after projection")
    ax.set_ylabel("density")
    ax.set_title(f"P(error <= {d:g}) = {keep:.4f} (closed form)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
