"""Models that can abstain, and rejection-aware metrics (hyperspherical-defense.txt,
"robust geodesic inference": a test sample whose angle to the predicted class is too
large is rejected as adversarial).

Protocol (the one advgeom uses everywhere): a model that can reject is an ordinary
classifier whose ``forward(x)`` returns logits (so every attack works on it unchanged)
and which also has a method

    ``predict_with_rejection(x) -> (logits, accept)``

where ``logits`` equal ``forward(x)`` and ``accept`` is a bool tensor of shape ``(N,)``,
``True`` where the model accepts (answers) and ``False`` where it abstains.

Metrics (all in percent, reported as their own rows, never folded into plain accuracy;
plain clean/robust accuracy of such a model ignores the accept mask):

* ``clean_accuracy_accepted``  correct among accepted clean inputs;
* ``clean_rejection_rate``     rejected among clean inputs;
* ``adv_rejection_rate``       rejected among adversarial inputs (one per sample);
* ``robust_accuracy_with_rejection``  samples where neither the clean nor the
  adversarial input is accepted *and* misclassified — a rejected input counts as
  defended. Read it beside the clean rejection rate: a model rejecting everything
  scores 100 here.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError


@runtime_checkable
class RejectingModel(Protocol):
    """A classifier that can abstain (see the module docstring)."""

    def predict_with_rejection(self, inputs: Tensor) -> tuple[Tensor, Tensor]: ...


def can_reject(model: nn.Module) -> bool:
    """Whether ``model`` follows the rejection protocol."""
    return callable(getattr(model, "predict_with_rejection", None))


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(predicted labels, accept mask or None)`` for a batch."""
    if can_reject(model):
        out = model.predict_with_rejection(inputs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise AdvgeomError("predict_with_rejection must return (logits, accept)")
        logits, accept = out
        accept = torch.as_tensor(accept, device=logits.device)
        if accept.shape != logits.shape[:1]:
            raise AdvgeomError(f"accept mask has shape {tuple(accept.shape)}, "
                               f"expected ({logits.shape[0]},)")
        return _argmax(logits), accept.bool()
    return _argmax(model(inputs)), None


def _argmax(logits: Tensor) -> Tensor:
    """Predicted class; a single logit column is a binary classifier (logit > 0 -> 1)."""
    if logits.dim() == 2 and logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    if logits.dim() == 1:
        return (logits > 0).long()
    return logits.argmax(dim=1)


def _pct(mask: Tensor) -> float:
    return 100.0 * float(mask.float().mean()) if mask.numel() else 0.0


def defended(correct: Tensor, accept: Tensor) -> Tensor:
    """Per sample: the input is rejected or correctly classified."""
    return (~accept) | correct


def clean_rejection_metrics(correct: Tensor, accept: Tensor) -> dict[str, float]:
    """``clean_accuracy_accepted`` and ``clean_rejection_rate`` (percent)."""
    n_acc = int(accept.sum())
    acc = 100.0 * float((correct & accept).sum()) / n_acc if n_acc else 0.0
    return {"clean_accuracy_accepted": acc, "clean_rejection_rate": _pct(~accept)}


def adversarial_rejection_metrics(clean_correct: Tensor, clean_accept: Tensor,
                                  adv_correct: Tensor, adv_accept: Tensor) -> dict[str, float]:
    """``adv_rejection_rate`` and ``robust_accuracy_with_rejection`` (percent)."""
    ok = defended(clean_correct, clean_accept) & defended(adv_correct, adv_accept)
    return {"adv_rejection_rate": _pct(~adv_accept), "robust_accuracy_with_rejection": _pct(ok)}
