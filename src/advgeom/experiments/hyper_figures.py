"""Figures of hyperspherical-defense.txt for the hyper-* experiments: the embedding
space of Fig. 2 (features before the classifier, projected to 2-D by PCA, each point
scaled to unit length as on the hypersphere) and the histograms of the angles between
features and class weights that the geodesic rejection thresholds come from."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from matplotlib.figure import Figure
from torch import nn

from advgeom.inference import angle_statistics, class_angles
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
        f = model.features(x)
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
        _, ang = class_angles(model, xt)
        own = ang.gather(1, yt.unsqueeze(1)).squeeze(1)
        logits, ang_t = class_angles(model, xs)
        pred = ang_t.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
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
