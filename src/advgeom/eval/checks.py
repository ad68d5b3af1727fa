"""Sanity checks every robustness evaluation must survive (docs/design.md "Evaluating
robustness honestly"; Carlini et al. 2019, Croce & Hein 2020, Tramer et al. 2020).

Each check returns a :class:`CheckResult` with status ``pass``, ``warn`` (a symptom
worth a look: zero gradients, a saturated loss, softmax outputs), ``fail`` (the numbers are not
trustworthy as they stand) or ``skip`` (not applicable). Row-level checks are pure
functions of result rows; the others take the tensors they inspect.
"""
from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.attacks.spec import KINDS
from advgeom.errors import AdvgeomError
from advgeom.results.rows import Row

Status = Literal["pass", "warn", "fail", "skip"]

WHITE_BOX = ("single_step", "iterative", "min_norm")
BLACK_BOX = ("black_box", "transfer")
ROBUST_METRICS = ("robust_accuracy", "robust_accuracy_with_rejection")


class CheckError(AdvgeomError):
    """A sanity check failed in strict mode."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckReport:
    """All check results of one evaluation."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "warn"]

    def get(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def raise_if_failed(self) -> None:
        if self.failed:
            raise CheckError("evaluation sanity check(s) failed: "
                             + "; ".join(f"{r.name}: {r.message}" for r in self.failed))


_COLLECTED: ContextVar[list[tuple[str, CheckReport]] | None] = ContextVar(
    "advgeom_check_reports", default=None)


@contextmanager
def collect_reports() -> Iterator[list[tuple[str, CheckReport]]]:
    """Collect ``(label, report)`` of every evaluation run in the body (nested
    collectors each get their own), e.g. all evaluations of one experiment, so that
    ``advgeom reproduce`` can report their verdicts and fail on a failed check."""
    bucket: list[tuple[str, CheckReport]] = []
    token = _COLLECTED.set(bucket)
    try:
        yield bucket
    finally:
        _COLLECTED.reset(token)


def collect(label: str, report: CheckReport) -> None:
    """Hand one evaluation's report to the active :func:`collect_reports`, if any."""
    bucket = _COLLECTED.get()
    if bucket is not None:
        bucket.append((label, report))


@dataclass(frozen=True)
class CheckConfig:
    """Tolerances (accuracies in percentage points) and the unbounded-attack settings."""

    threat_tol: float = 1e-6            # ||delta|| <= eps + threat_tol (+ 1e-6 * eps for l2)
    monotone_tol: float = 0.0
    iterative_tol: float = 0.0
    masking_level: float = 0.05         # one-sided exact McNemar test of the masking checks
    masking_points: float = 5.0         # a black-box lead this large (points) fails at any n
    zero_grad_max_fraction: float = 0.05
    saturated_max_fraction: float = 0.05   # share of samples with the cross-entropy exactly 0
    unbounded_subset: int = 64          # 0 disables the unbounded-attack check
    unbounded_attack: str = "pgd:steps=100,loss=margin"
    unbounded_max_accuracy: float = 2.0
    # a model that can reject: run when the evaluation has no rejection-aware attack
    unbounded_rejection_attack: str = "geodesic_adaptive:steps=50,guides=20"


def attack_kind(row_or_name: Row | str) -> str:
    """``single_step``/``iterative``/``min_norm``/``black_box``/``transfer``/``unknown``."""
    if isinstance(row_or_name, Row):
        if row_or_name.extra.get("kind"):
            return str(row_or_name.extra["kind"])
        name = str(row_or_name.extra.get("base", row_or_name.attack))
    else:
        name = row_or_name
    return KINDS.get(name.split(":")[0], "unknown")


# ---------------------------------------------------------------------------
# threat model


def threat_model_stats(inputs: Tensor, adv: Tensor, eps: float, norm: str) -> dict[str, Any]:
    """Largest perturbation norm, value range and finiteness of one adversarial batch."""
    if adv.shape != inputs.shape:
        raise AdvgeomError(f"attack returned shape {tuple(adv.shape)} for inputs {tuple(inputs.shape)}")
    finite = bool(torch.isfinite(adv).all())
    d = (adv.detach().double() - inputs.detach().double()).flatten(1)
    d = torch.nan_to_num(d, nan=float("inf"))
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return {"max_norm": float(size.max()) if size.numel() else 0.0,
            "min_value": float(torch.nan_to_num(adv, nan=-1.0).min()),
            "max_value": float(torch.nan_to_num(adv, nan=2.0).max()),
            "finite": finite}


def check_threat_model(stats: Iterable[dict[str, Any]], norm: str,
                       tol: float = 1e-6) -> CheckResult:
    """Every adversarial inside its eps-ball (``norm``), inside [0,1] and finite.

    ``stats``: dicts with ``attack``, ``eps`` and the keys of :func:`threat_model_stats`.
    """
    bad, cells = [], []
    for s in stats:
        limit = s["eps"] + tol + (1e-6 * s["eps"] if norm == "l2" else 0.0)
        why = []
        if not s["finite"]:
            why.append("NaN/inf values")
        if s["max_norm"] > limit:
            why.append(f"||delta||_{norm[1:]} = {s['max_norm']:.6g} > eps {s['eps']:g}")
        if s["min_value"] < 0.0 or s["max_value"] > 1.0:
            why.append(f"values in [{s['min_value']:.4g}, {s['max_value']:.4g}] outside [0,1]")
        if why:
            bad.append(f"{s['attack']} @ eps={s['eps']:g}: {', '.join(why)}")
            cells.append((s["attack"], s["eps"]))
    if bad:
        return CheckResult("threat_model", "fail", "; ".join(sorted(set(bad))),
                           {"violations": bad, "cells": cells})
    return CheckResult("threat_model", "pass", f"all adversarials inside the {norm} ball and [0,1]")


# ---------------------------------------------------------------------------
# checks on rows


def _groups(rows: Iterable[Row]) -> dict[tuple, list[Row]]:
    g: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        g[(r.experiment, r.model, r.defense, r.dataset, r.norm, r.seed)].append(r)
    return g


def robust_by_eps(rows: Iterable[Row]) -> Iterator[tuple[float, list[Row]]]:
    """Per run group and eps (ascending), the robust-accuracy rows of every attack."""
    for rs in _groups(rows).values():
        by_eps: dict[float, list[Row]] = defaultdict(list)
        for r in rs:
            if r.metric == "robust_accuracy":
                by_eps[float(r.eps)].append(r)
        yield from sorted(by_eps.items())


def check_monotone(rows: Iterable[Row], tol: float = 0.0) -> CheckResult:
    """Robust accuracy never increases with eps (per attack and for the worst case);
    the clean accuracy counts as the value at eps = 0."""
    bad, cells = [], []
    for key, rs in _groups(rows).items():
        clean = [r for r in rs if r.metric == "clean_accuracy"]
        for metric in ROBUST_METRICS:
            curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for r in rs:
                if r.metric == metric:
                    curves[r.attack].append((float(r.eps), float(r.value)))
            for attack, pts in curves.items():
                pts.sort()
                if metric == "robust_accuracy" and clean and pts[0][0] > 0:
                    pts.insert(0, (0.0, float(clean[0].value)))
                for (e0, a0), (e1, a1) in zip(pts, pts[1:]):
                    if a1 > a0 + tol:
                        bad.append(f"{attack} {metric}: {a0:.2f}% at eps={e0:g} < {a1:.2f}% at eps={e1:g}")
                        cells.append((attack, e1))
    if bad:
        return CheckResult("monotone_in_eps", "fail", "accuracy increases with eps: " + "; ".join(bad),
                           {"violations": bad, "cells": cells})
    return CheckResult("monotone_in_eps", "pass", "accuracy non-increasing in eps")


def check_iterative_vs_single_step(rows: Iterable[Row], tol: float = 0.0) -> CheckResult:
    """Every iterative attack at least as strong as every single-step one at the same
    eps and with the same loss (rows' ``extra["loss"]``; pairs with different known
    losses are not compared: a DLR attack may legitimately lose a few samples to
    FGSM-CE, and the per-sample worst case covers that). An attack that steers a
    rejecting model's acceptance as well (``extra["steers_rejection"]``) is not compared:
    it trades misclassification for acceptance, and ``unbounded_rejection`` judges it."""
    bad, compared, cells = [], 0, []
    for eps, er in robust_by_eps(rows):
        single = [r for r in er if attack_kind(r) == "single_step"]
        iterative = [r for r in er if attack_kind(r) == "iterative" and not r.extra.get("steers_rejection")]
        for s in single:
            for it in iterative:
                ls, li = s.extra.get("loss"), it.extra.get("loss")
                if ls and li and ls != li:
                    continue
                compared += 1
                if it.value > s.value + tol:
                    bad.append(f"{it.attack} {it.value:.2f}% > {s.attack} {s.value:.2f}% at eps={eps:g}")
                    cells.append((it.attack, eps))
    if not compared:
        return CheckResult("iterative_vs_single_step", "skip", "needs a single-step and an iterative attack")
    if bad:
        return CheckResult("iterative_vs_single_step", "fail",
                           "iterative attack weaker than single-step (attack too weak or "
                           "gradient masking): " + "; ".join(bad), {"violations": bad, "cells": cells})
    return CheckResult("iterative_vs_single_step", "pass", "iterative attacks at least as strong as single-step")


def check_per_sample_monotone(rows: Iterable[Row]) -> CheckResult:
    """Report samples an attack broke at a smaller eps but not at a larger one (the
    evaluator counts them broken at the larger eps too: rows'
    ``extra["counted_from_smaller_eps"]``): the attack is erratic there."""
    hits = [(r.attack, float(r.eps), int(r.extra.get("counted_from_smaller_eps", 0)))
            for r in rows if r.metric == "robust_accuracy" and r.extra.get("counted_from_smaller_eps")]
    if not hits:
        return CheckResult("per_sample_monotone", "pass",
                           "no sample robust at an eps after being broken at a smaller one")
    msg = "; ".join(f"{a} at eps={e:g}: {k} sample(s)" for a, e, k in hits)
    return CheckResult("per_sample_monotone", "warn", "adversarials found at a smaller eps were missed "
                       f"at a larger one and counted from the smaller eps: {msg}",
                       {"cells": [(a, e) for a, e, _ in hits]})


def check_fragile(rows: Iterable[Row]) -> CheckResult:
    """Fail when scored adversarials sit on the decision boundary (logit margin within
    the success margin): float noise, another batch size or AMP could flip them, so the
    numbers they enter are not reproducible to the stated precision."""
    hits = [(r.attack, float(r.eps), int(r.extra.get("fragile", 0)))
            for r in rows if r.metric == "robust_accuracy" and r.extra.get("fragile")]
    if not hits:
        return CheckResult("boundary_points", "pass", "no scored adversarial on the decision boundary")
    msg = "; ".join(f"{a} at eps={e:g}: {k}" for a, e, k in hits)
    return CheckResult("boundary_points", "fail", "adversarials within the success margin of the "
                       f"decision boundary (could flip under float noise): {msg}",
                       {"cells": [(a, e) for a, e, _ in hits]})


def mark_rows(rows: list[Row], report: "CheckReport") -> None:
    """Write into each concerned row ``extra["failed_checks"]`` the failed checks that
    concern it: those naming (attack, eps) cells mark those rows and the worst case at
    that eps; the others (unbounded attack, model state) mark every robustness row, or
    only the rows of the metrics their ``details["metrics"]`` name (the unbounded check
    with rejection: the robust accuracies with rejection)."""
    for r in report.failed:
        cells = r.details.get("cells")
        eps_hit = None if cells is None else {float(e) for _, e in cells}
        names = None if cells is None else {a for a, _ in cells}
        metrics = set(r.details.get("metrics") or ROBUST_METRICS)
        for row in rows:
            if row.metric not in ROBUST_METRICS or row.metric not in metrics:
                continue
            if cells is None or (float(row.eps) in eps_hit and (row.attack in names
                                                                or row.attack == "worst_case")):
                row.extra.setdefault("failed_checks", [])
                if r.name not in row.extra["failed_checks"]:
                    row.extra["failed_checks"].append(r.name)


# ---------------------------------------------------------------------------
# checks on the model


def check_gradients(model: nn.Module, inputs: Tensor, labels: Tensor,
                    max_fraction: float = 0.05) -> CheckResult:
    """Warn when the cross-entropy input gradient is exactly zero on many samples
    (saturated softmax, non-differentiable layers: gradient masking)."""
    x = inputs.detach().clone().requires_grad_(True)
    logits = model(x)
    if logits.dim() == 2 and logits.shape[1] == 1:
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="sum")
    else:
        loss = F.cross_entropy(logits, labels, reduction="sum")
    if not loss.requires_grad:
        return CheckResult("zero_gradients", "warn", "model output does not depend differentiably "
                           "on the input: gradient attacks cannot work (use BPDA)", {"fraction": 1.0})
    (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    g = torch.zeros_like(x) if g is None else g
    frac = float((g.flatten(1).abs().amax(1) == 0).float().mean())
    details = {"fraction": frac, "n": int(x.shape[0])}
    if frac > max_fraction:
        return CheckResult("zero_gradients", "warn", f"input gradient exactly zero on {100 * frac:.1f}% "
                           "of samples: use margin/DLR losses (and BPDA for non-differentiable parts)",
                           details)
    return CheckResult("zero_gradients", "pass", f"zero input gradient on {100 * frac:.1f}% of samples", details)


def check_saturated_loss(logits: Tensor, labels: Tensor, max_fraction: float = 0.05) -> CheckResult:
    """Warn when the cross-entropy is exactly 0 on more than ``max_fraction`` of the samples.

    In float32 the loss rounds to 0 once the other classes' exp(z_j - z_y) sum below 2^-24
    (about 6e-8): the label leads every other logit by at least ln 2^24 ~ 16.6, more when
    several are close. Its gradient with respect to the logits, softmax - onehot, then
    loses the label's term and keeps only the other classes' tiny ones, so FGSM and CE-PGD
    step in a biased direction and overstate robust accuracy there (Carlini & Wagner 2016,
    "Defensive distillation is not robust to adversarial examples"; Lee & Chandrakasan
    2020, "Rethinking empirical evaluation of adversarial robustness using first-order
    attack methods"); margin and DLR losses do not saturate. A single-logit (binary) model
    is skipped: its saturated points have an exactly zero gradient (``zero_gradients``)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        return CheckResult("saturated_loss", "skip", "not a multi-class output")
    per = F.cross_entropy(logits.detach(), labels, reduction="none")
    share = float((per == 0).float().mean())
    details = {"fraction": share, "n": int(labels.shape[0])}
    seen = f"cross-entropy exactly 0 ({str(per.dtype).removeprefix('torch.')}) on {100 * share:.1f}% of samples"
    if share > max_fraction:
        return CheckResult("saturated_loss", "warn", f"{seen}: its gradient there lacks the label's term, so "
                           "cross-entropy attacks (FGSM, CE-PGD) overstate robust accuracy; margin/DLR "
                           "losses do not saturate", details)
    return CheckResult("saturated_loss", "pass", seen, details)


def check_softmax_outputs(logits: Tensor) -> CheckResult:
    """Warn when the model seems to return probabilities instead of logits."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        return CheckResult("softmax_outputs", "skip", "not a multi-class output")
    in_unit = bool(((logits >= 0) & (logits <= 1)).all())
    sums_one = bool(((logits.sum(1) - 1).abs() < 1e-4).all())
    if in_unit and sums_one:
        return CheckResult("softmax_outputs", "warn", "model outputs look like softmax probabilities "
                           "(rows in [0,1] summing to 1): attacks expect logits")
    return CheckResult("softmax_outputs", "pass", "outputs are not probability vectors")


def check_model_state(training_before: bool, training_after: bool,
                      hash_before: str, hash_after: str) -> list[CheckResult]:
    """The model was (and stayed) in eval mode and its parameters/buffers are unchanged."""
    if training_before:
        mode = CheckResult("model_eval_mode", "fail", "model was in training mode: call model.eval() "
                           "before evaluating (dropout/batch norm change the results)")
    elif training_after:
        mode = CheckResult("model_eval_mode", "fail", "an attack switched the model to training mode")
    else:
        mode = CheckResult("model_eval_mode", "pass", "model in eval mode before and after")
    same = (CheckResult("model_unchanged", "pass", "parameters and buffers unchanged")
            if hash_before == hash_after else
            CheckResult("model_unchanged", "fail", "parameters or buffers changed during evaluation"))
    return [mode, same]


def check_unbounded(run_attack: Callable[[], float], max_accuracy: float, what: str, *,
                    name: str = "unbounded_attack", metric: str = "accuracy") -> CheckResult:
    """An attack whose eps-ball covers all of [0,1]^d must drive accuracy to ~0.

    ``run_attack()`` returns the accuracy (percent) it leaves; ``metric`` names it
    (``robust accuracy with rejection`` for the check of a rejecting model).
    """
    acc = run_attack()
    details = {"accuracy": acc, "attack": what}
    if not math.isfinite(acc) or acc > max_accuracy:
        return CheckResult(name, "fail", f"{what} leaves {acc:.2f}% {metric} "
                           f"(> {max_accuracy:g}%): attack too weak or gradient masking", details)
    return CheckResult(name, "pass", f"{what} leaves {acc:.2f}% {metric}", details)
