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
* ``robust_accuracy_with_rejection``  samples whose clean input is accepted and
  correct and whose adversarial is rejected or correct (Tramer 2022; Stutz et al.
  2020): a rejected clean input is a loss, a rejected adversarial a defence. A model
  rejecting everything scores 0 here. Rows carry the clean rejection rate the number
  was measured at (``extra["clean_rejection_rate"]``).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError
from advgeom.eval.bookkeeping import percent
from advgeom.logits import predicted_class


@runtime_checkable
class RejectingModel(Protocol):
    """A classifier that can abstain (see the module docstring)."""

    def predict_with_rejection(self, inputs: Tensor) -> tuple[Tensor, Tensor]: ...


def can_reject(model: nn.Module) -> bool:
    """Whether ``model`` follows the rejection protocol."""
    return callable(getattr(model, "predict_with_rejection", None))


def steers_rejection(spec: Any) -> bool:
    """Whether an attack spec's function is rejection-aware (``info.rejection_aware``: on
    a model that can reject it seeks a misclassified point the model accepts)."""
    info = getattr(getattr(spec, "fn", None), "info", None)
    return bool(getattr(info, "rejection_aware", False))


@torch.no_grad()
def scores(model: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(logits, accept mask or None)`` for a batch."""
    if can_reject(model):
        out = model.predict_with_rejection(inputs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise AdvgeomError("predict_with_rejection must return (logits, accept)")
        logits, accept = out
        accept = torch.as_tensor(accept, device=logits.device)
        if accept.shape != logits.shape[:1]:
            raise AdvgeomError(f"accept mask has shape {tuple(accept.shape)}, "
                               f"expected ({logits.shape[0]},)")
        return logits, accept.bool()
    return model(inputs), None


def predict(model: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(predicted labels, accept mask or None)`` for a batch."""
    logits, accept = scores(model, inputs)
    return predicted_class(logits), accept


def defended(correct: Tensor, accept: Tensor) -> Tensor:
    """Per sample: the input is rejected or correctly classified."""
    return (~accept) | correct


def clean_rejection_metrics(correct: Tensor, accept: Tensor) -> dict[str, float]:
    """``clean_accuracy_accepted`` and ``clean_rejection_rate`` (percent)."""
    n_acc = int(accept.sum())
    acc = 100.0 * float((correct & accept).sum()) / n_acc if n_acc else 0.0
    return {"clean_accuracy_accepted": acc, "clean_rejection_rate": percent(~accept)}


def adversarial_rejection_metrics(clean_correct: Tensor, clean_accept: Tensor,
                                  adv_defended: Tensor, adv_accept: Tensor) -> dict[str, float]:
    """``adv_rejection_rate`` and ``robust_accuracy_with_rejection`` (percent):
    clean input accepted and correct, adversarial defended (``adv_defended``: rejected
    or correct, see :func:`defended`)."""
    ok = clean_correct & clean_accept & adv_defended
    return {"adv_rejection_rate": percent(~adv_accept), "robust_accuracy_with_rejection": percent(ok)}
