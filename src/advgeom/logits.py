"""Logit conventions shared by attacks, analysis and evaluation (one implementation).

A binary model may return one logit ``s`` per sample (class 1 iff ``s > 0``); it is
lifted to the two logits ``[0, s]``, whose argmax is the same class, so every loss and
decision rule written for (N, C) logits with C >= 2 works unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def two_logits(logits: Tensor) -> Tensor:
    """(N,) or (N, 1) logits ``s`` become (N, 2) ``[0, s]``; (N, C >= 2) are returned as is."""
    if logits.dim() == 1:
        logits = logits.unsqueeze(1)
    if logits.dim() == 2 and logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def predicted_class(logits: Tensor) -> Tensor:
    """Predicted class (int64): argmax, or ``s > 0`` for one logit ``s``."""
    return two_logits(logits).argmax(dim=1)


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor) -> Tensor:
    """``predicted_class(model(x))``."""
    return predicted_class(model(x))
