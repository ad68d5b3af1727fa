"""Robust geodesic inference (hyperspherical-defense.txt, Section 4.3): per class j,
the mean theta_mu_j and standard deviation theta_sigma_j of the angle between the
features of the training samples of class j and the class weight W_j; at test time a
sample predicted as class j is rejected when its angle to W_j exceeds
``p (theta_mu_j + theta_sigma_j)``.

``p`` is 1 by default (the paper's choice) or calibrated on held-out clean data to a
target clean rejection rate (:meth:`GeodesicRejector.calibrate`). The wrapped model
follows advgeom's rejection protocol (:mod:`advgeom.eval.rejection`): ``forward``
returns the logits, ``predict_with_rejection`` returns ``(logits, accept)``; and
``angle_excess`` gives the differentiable angles minus thresholds that the adaptive
attack (:mod:`advgeom.attacks.geodesic`) uses.

Works for any :class:`~advgeom.models.base.Classifier` whose head has a ``weight``
(C x d): a SphereHead, or a plain linear classifier (angles to its rows).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advgeom.errors import ConfigError
from advgeom.types import check_inputs
from advgeom.logits import predicted_class
from advgeom.nn.sphere import angle, safe_norm


def check_p(p: object) -> float:
    """``p`` must be a finite number > 0."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0 or not math.isfinite(p):
        raise ConfigError(f"geodesic inference: p must be a finite number > 0, got {p!r}")
    return float(p)


def head_weight(model: nn.Module) -> Tensor:
    """The class weights W (C x d) of ``model.head``."""
    w = getattr(getattr(model, "head", None), "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2 or not callable(getattr(model, "features", None)):
        raise ConfigError("geodesic inference needs a Classifier with features() and a head "
                          "with a (classes x features) weight")
    return w


def class_angles(model: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """``(logits, angles)``: angles (N, C) in radians between each sample's features and
    every class weight W_j (differentiable)."""
    feats = model.features(inputs)
    w = head_weight(model)
    cos = (feats @ w.T) / (safe_norm(feats, 1, keepdim=True) * safe_norm(w, 1).unsqueeze(0))
    return model.head(feats), angle(cos)


@torch.no_grad()
def angle_statistics(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                     batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Per class j: mean and standard deviation of the angle between the features of
    the samples of class j and W_j (classes without samples get NaN, refused later)."""
    w = head_weight(model)
    _check_batch(inputs, labels, w.shape[0])
    _check_batch_size(batch_size)
    sums = torch.zeros(w.shape[0], dtype=torch.float64)
    sq = torch.zeros_like(sums)
    count = torch.zeros_like(sums)
    device = w.device
    for s in range(0, len(labels), batch_size):
        x, y = inputs[s:s + batch_size].to(device), labels[s:s + batch_size].to(device)
        _, ang = class_angles(model, x)
        own = ang.gather(1, y.unsqueeze(1)).squeeze(1).double().cpu()
        yc = y.cpu()
        sums.index_add_(0, yc, own)
        sq.index_add_(0, yc, own * own)
        count.index_add_(0, yc, torch.ones_like(own))
    mean = sums / count
    var = (sq / count - mean * mean).clamp_min(0.0) * count / (count - 1).clamp_min(1.0)
    return mean.float(), var.sqrt().float()


def _check_batch(inputs: Tensor, labels: Tensor | None = None, classes: int | None = None) -> None:
    """The input contract (:func:`advgeom.types.check_inputs`) without its [0,1] range:
    the head may read raw features."""
    check_inputs(inputs, labels, classes, what="geodesic inference: inputs", check_range=False)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"geodesic inference: batch_size must be a positive integer, got {batch_size!r}")


class GeodesicRejector(nn.Module):
    """``model`` with robust geodesic inference: rejects a sample predicted as j when its
    angle to W_j exceeds ``p (theta_mu_j + theta_sigma_j)``."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor, p: float = 1.0) -> None:
        super().__init__()
        device = head_weight(model).device   # the statistics live beside the model they describe
        if mean.shape != std.shape or mean.dim() != 1 or not torch.isfinite(mean).all() \
                or not torch.isfinite(std).all():
            raise ConfigError("geodesic inference: every class needs training samples "
                              "(finite angle mean and std per class)")
        classes = head_weight(model).shape[0]
        if mean.numel() != classes:
            raise ConfigError(f"geodesic inference: {mean.numel()} angle statistics for a head of "
                              f"{classes} classes (one mean and std per class)")
        self.model = model
        self.register_buffer("mean", mean.detach().clone().float().to(device))
        self.register_buffer("std", std.detach().clone().float().to(device))
        # a buffer, so that the state hash keying cached evaluations changes with p
        self.register_buffer("p_factor", torch.tensor(check_p(p), device=device))
        self.num_classes = getattr(model, "num_classes", mean.numel())
        self.input_shape = getattr(model, "input_shape", None)
        self.train(model.training)  # the wrapped model's mode (eval for a trained model)

    @classmethod
    def fit(cls, model: nn.Module, inputs: Tensor, labels: Tensor, *, p: float = 1.0,
            batch_size: int = 500) -> "GeodesicRejector":
        """Angle statistics from the training samples ``inputs``/``labels``, measured with
        the model in eval mode (BatchNorm running statistics untouched); the model's mode
        is restored afterwards."""
        was_training = model.training
        model.eval()
        try:
            mean, std = angle_statistics(model, inputs, labels, batch_size=batch_size)
        finally:
            model.train(was_training)
        return cls(model, mean, std, p)

    @property
    def p(self) -> float:
        """The threshold factor p."""
        return float(self.p_factor)

    @p.setter
    def p(self, value: float) -> None:
        self.p_factor.fill_(check_p(value))

    @property
    def thresholds(self) -> Tensor:
        """``p (theta_mu_j + theta_sigma_j)`` per class (radians)."""
        return self.p * (self.mean + self.std)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)

    def angle_excess(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, angles - thresholds)`` (N, C), differentiable: a sample predicted
        as j is accepted iff its excess at j is <= 0."""
        logits, ang = class_angles(self.model, inputs)
        return logits, ang - self.thresholds.to(ang)

    @torch.no_grad()
    def predict_with_rejection(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        logits, excess = self.angle_excess(inputs)
        pred = predicted_class(logits)
        return logits, excess.gather(1, pred.unsqueeze(1)).squeeze(1) <= 0

    @torch.no_grad()
    def ratios(self, inputs: Tensor, batch_size: int = 500) -> Tensor:
        """Per sample: angle to the predicted class's W over ``theta_mu + theta_sigma``
        of that class (rejected iff the ratio exceeds ``p``)."""
        _check_batch(inputs)
        _check_batch_size(batch_size)
        out = []
        for s in range(0, inputs.shape[0], batch_size):
            logits, ang = class_angles(self.model, inputs[s:s + batch_size])
            pred = predicted_class(logits).unsqueeze(1)
            base = (self.mean + self.std).to(ang)[pred.squeeze(1)]
            out.append(ang.gather(1, pred).squeeze(1) / base)
        return torch.cat(out)

    def calibrate(self, inputs: Tensor, target_rate: float, batch_size: int = 500) -> float:
        """Set ``p`` so that a share ``target_rate`` (in [0, 1)) of the held-out clean
        ``inputs`` is rejected (the (1 - target) quantile of their ratios); returns p."""
        if isinstance(target_rate, bool) or not isinstance(target_rate, (int, float)) \
                or not 0.0 <= target_rate < 1.0:
            raise ConfigError(f"geodesic calibration: target rejection rate must be in [0, 1), "
                              f"got {target_rate!r}")
        r = self.ratios(inputs.to(head_weight(self.model).device), batch_size).double().sort().values
        keep = int(math.ceil((1.0 - target_rate) * len(r))) - 1  # accept the first keep+1
        self.p = check_p(float(r[max(keep, 0)]) * (1 + 1e-6) if len(r) else 1.0)
        return self.p
