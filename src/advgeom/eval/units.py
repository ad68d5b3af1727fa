"""The units of an evaluation and the per-sample bookkeeping around them
(docs/design.md "Evaluating robustness honestly"; used by :mod:`advgeom.eval.runner` and
:mod:`advgeom.eval.minnorm`).

A unit is one (batch, attack, eps) attack or one clean pass of a batch. Its per-sample
outcome is a JSON payload stored atomically by the results store
(``ResultStore.finish_unit``), so a rerun skips finished units and a killed run loses
at most the unit in flight. Every adversarial an attack returns is scored again here,
in float32, by the evaluator: the stored outcome is its verdict, not the attack's.
:func:`outcomes` turns the units' payloads into per-sample outcomes and the worst case.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import probe_logits
from advgeom.attacks._losses import margin_loss, success_margin
from advgeom.attacks.base import PassCounter
from advgeom.attacks.spec import AttackSpec, parse_attack_spec
from advgeom.errors import AdvgeomError
from advgeom.eval import checks as C
from advgeom.eval.bookkeeping import HookCounter, percent, unit_seed
from advgeom.eval.rejection import defended, scores, steers_rejection
from advgeom.hashing import state_hash, tensor_hash, text_hash
from advgeom.logits import predicted_class, two_logits
from advgeom.results.store import ResultStore
from advgeom.seeding import make_generator

WORST = "worst_case"
Payload = dict[str, Any]   # a unit's stored per-sample outcome

# ---------------------------------------------------------------------------
# inputs


def check_readable(model: nn.Module, x1: Tensor) -> int:
    """One clear error when the model cannot take these inputs (another input shape);
    returns the number of classes its output scores on them (one logit: 2)."""
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape and tuple(x1.shape[1:]) != shape:
        raise AdvgeomError(f"the model takes inputs of shape {shape}, the data has {tuple(x1.shape[1:])}")
    with torch.no_grad():
        return probe_logits(model, x1).shape[1]


def check_classes(classes: int, labels: Tensor, num_classes: int | None, data: str = "") -> None:
    """One clear error, before any attack, when the model scores another number of
    classes (``classes``, from :func:`check_readable`) than the data set has
    (``num_classes``) or than its labels need (an attack would index past the logits)."""
    what = f"data set {data!r}" if data else "data set"
    if num_classes is not None and classes != int(num_classes):
        raise AdvgeomError(f"the model scores {classes} classes but the {what} has {num_classes}: "
                           "evaluate a model trained on this data set")
    top = int(labels.max()) if labels.numel() else -1
    if top >= classes:
        raise AdvgeomError(f"the data has label {top} but the model scores {classes} classes "
                           f"(labels 0 to {classes - 1})")


def unpack(data: Any, n: int | None) -> tuple[Tensor, Tensor, int | None, str]:
    """``(inputs, labels, number of classes or None, data set name)`` of ``data`` (a
    TensorData or an ``(inputs, labels)`` pair), cut to its first ``n`` samples."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        x, y, k, name = data.images, data.labels, getattr(data, "num_classes", None), getattr(data, "name", "")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        (x, y), k, name = data, None, ""
    else:
        raise AdvgeomError("data must be a TensorData or an (inputs, labels) pair")
    if n is not None:
        if n <= 0:
            raise AdvgeomError(f"n must be positive, got {n}")
        x, y = x[:n], y[:n]
    return x, y, k, name


def device_of(model: nn.Module, x: Tensor) -> torch.device:
    """The device of the model's parameters (that of ``x`` for a parameterless model)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else x.device


def to_bools(t: Tensor | None) -> list[bool] | None:
    """A boolean mask as a JSON-ready list (a unit's payload)."""
    return None if t is None else [bool(v) for v in t.cpu()]


def from_bools(v: list[bool] | None) -> Tensor | None:
    """The inverse of :func:`to_bools` (a CPU bool tensor)."""
    return None if v is None else torch.tensor(v, dtype=torch.bool)


def unbounded_eps(norm: str, inputs: Tensor) -> float:
    """An eps whose ball contains all of [0,1]^d (1 for linf, sqrt(d) for l2)."""
    return 1.0 if norm == "linf" else math.sqrt(inputs[0].numel())


# ---------------------------------------------------------------------------
# units


class Units:
    """Runs units of work, reusing stored payloads when a store is given; with
    ``write=False`` (ranks other than 0) finished units are kept in :attr:`fresh` for
    rank 0 to store instead of being written."""

    def __init__(self, store: ResultStore | None, bar: Any, write: bool = True) -> None:
        self.store, self.bar, self.run, self.skipped = store, bar, 0, 0
        self.write = write
        self.fresh: list[tuple[str, Any]] = []
        self.seconds = 0.0          # compute time of the units run by this call
        self.seconds_before = 0.0   # compute time the reused units recorded when they ran
        self.untimed = 0            # reused units that recorded none (written before times were)

    def __call__(self, key: str, compute: Any, tick: bool = True) -> dict[str, Any]:
        payload, before = self.store.unit_record(key) if self.store is not None else (None, None)
        if payload is None:
            t = time.perf_counter()
            payload = compute()
            dt = time.perf_counter() - t
            self.seconds += dt
            if self.store is not None and self.write:
                self.store.finish_unit(key, payload, [], seconds=dt)
            self.fresh.append((key, payload))
            self.run += 1
        else:
            self.skipped += 1
            if before is None:
                self.untimed += 1
            else:
                self.seconds_before += before
        if self.bar is not None and tick:
            self.bar.update(1)
        return payload


def clean_unit(model: nn.Module, xb: Tensor, yb: Tensor) -> dict[str, Any]:
    """Per sample of a batch: correct, and accepted (models that can reject). Logits
    that are not finite are an error: their argmax would score NaN as class 0."""
    logits, accept = scores(model, xb)
    bad = ~torch.isfinite(logits.float()).all(dim=1)
    if bool(bad.any()):
        raise AdvgeomError(f"the model returned non-finite logits (NaN or inf) on {int(bad.sum())} of "
                           f"{len(xb)} clean inputs: no accuracy can be scored")
    return {"correct": to_bools(predicted_class(logits) == yb), "accept": to_bools(accept)}


def attack_unit(model: nn.Module, spec: AttackSpec, xb: Tensor, yb: Tensor, clean: dict[str, Any],
                eps: float, norm: str, seed: int, alive: Tensor | None = None,
                amp: bool = False) -> dict[str, Any]:
    """Attack the clean-correct samples of a batch (``alive``: only those) and score
    every returned adversarial again here, in this batch, whatever batch the attack
    used: the stored outcome is the evaluator's verdict, not the attack's. ``fragile``
    counts attacked samples whose scored logit margin is within
    :func:`~advgeom.attacks._losses.success_margin` of the boundary (either side).
    ``amp``: the attack's forward passes run under bf16 autocast (its inputs, input
    gradients and projections stay float32); scoring is always float32."""
    target = from_bools(clean["correct"]).to(xb.device)
    if alive is not None:
        target = target & alive.to(xb.device)
    idx = target.nonzero().flatten()
    adv = xb.clone()
    stats = {"max_norm": 0.0, "min_value": 0.0, "max_value": 1.0, "finite": True}
    fw = bw = 0
    if idx.numel():
        gen = make_generator(unit_seed(seed, spec.fingerprint(), float(eps), norm), xb.device)
        kwargs = spec.call_kwargs()
        with HookCounter(model) as pc:
            if spec.accepts("counter"):  # the attack counts its own passes
                pc = kwargs["counter"] = PassCounter()
            with torch.autocast(xb.device.type, dtype=torch.bfloat16) if amp else nullcontext():
                out = spec.fn(model, xb[idx], yb[idx], eps=eps, norm=norm, generator=gen, **kwargs)
        if not isinstance(out, Tensor):
            raise AdvgeomError(f"attack {spec.label!r} returned {type(out).__name__}, not a tensor")
        stats = C.threat_model_stats(xb[idx], out, eps, norm)
        adv[idx] = out.detach().to(adv.dtype)
        fw, bw = pc.forwards, pc.backwards
    logits, adv_accept = scores(model, torch.nan_to_num(adv, nan=0.0))
    z = two_logits(logits)
    fragile = (margin_loss(z, yb).abs() <= success_margin(z))[idx]
    return {"correct": to_bools(predicted_class(z) == yb), "accept": to_bools(adv_accept),
            "stats": stats, "forwards": fw, "backwards": bw, "attacked": int(idx.numel()),
            "fragile": int(fragile.sum())}


def monotone_in_eps(outcomes: dict[float, Tensor]) -> tuple[dict[float, Tensor], dict[float, int]]:
    """Per sample, an adversarial found at eps1 also counts at every larger eps (it lies
    in the larger ball of the same norm): ``robust[e] &= robust[e']`` for all ``e' < e``.
    Returns the corrected outcomes and, per eps, how many samples it changed."""
    fixed, changed, running = {}, {}, None
    for e in sorted(outcomes):
        raw = outcomes[e]
        fixed[e] = raw if running is None else raw & running
        changed[e] = int((raw & ~fixed[e]).sum())
        running = fixed[e]
    return fixed, changed


# ---------------------------------------------------------------------------
# per-sample worst case


@dataclass
class Outcomes:
    """Per-sample outcomes over all batches (see :func:`outcomes`)."""

    clean_correct: Tensor
    clean_accept: Tensor | None
    robust: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    adv_accept: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    defended: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    rescued: dict[tuple[str, float], int] = field(default_factory=dict)


def _cat(payloads: list[Payload], key: str) -> Tensor:
    return torch.cat([from_bools(p[key]) for p in payloads])


def outcomes(clean_p: list[Payload], adv_p: dict[tuple[str, float], list[Payload]],
             specs: list[AttackSpec], eps_list: list[float], cascade: bool,
             rejecting: bool) -> Outcomes:
    """Robust per sample, per (attack, eps), monotone in eps; with ``cascade`` each
    attack's outcome includes the earlier ones'; the worst case over attacks; for a
    model that can reject, its acceptances and the rejection-aware verdicts."""
    clean_correct = _cat(clean_p, "correct")
    out = Outcomes(clean_correct, _cat(clean_p, "accept") if rejecting else None)
    prev_label: str | None = None
    for spec in specs:
        raw = {e: clean_correct & _cat(adv_p[(spec.label, e)], "correct") for e in eps_list}
        if cascade and prev_label is not None:  # cumulative: after this attack and the earlier ones
            raw = {e: raw[e] & out.robust[(prev_label, e)] for e in eps_list}
        fixed, changed = monotone_in_eps(raw)
        for e in eps_list:
            out.robust[(spec.label, e)] = fixed[e]
            out.rescued[(spec.label, e)] = changed[e]
        if rejecting:
            ok = {e: defended(_cat(adv_p[(spec.label, e)], "correct"), _cat(adv_p[(spec.label, e)], "accept"))
                  for e in eps_list}
            ok, _ = monotone_in_eps(ok)
            for e in eps_list:
                out.adv_accept[(spec.label, e)] = _cat(adv_p[(spec.label, e)], "accept")
                out.defended[(spec.label, e)] = ok[e]
        prev_label = spec.label
    for e in eps_list:
        out.robust[(WORST, e)] = torch.stack([out.robust[(s.label, e)] for s in specs]).all(0)
    return out


def _unbounded_subset(x: Tensor, y: Tensor, norm: str, cfg: C.CheckConfig,
                      device: torch.device) -> tuple[Tensor, Tensor, float]:
    """The unbounded checks' subset (the first ``cfg.unbounded_subset`` points) and the
    eps whose ball covers the whole input box from each of them."""
    xs, ys = x[:cfg.unbounded_subset].to(device), y[:cfg.unbounded_subset].to(device)
    return xs, ys, unbounded_eps(norm, xs)


def _unbounded_key(tag: str, model: nn.Module, xs: Tensor, ys: Tensor, spec: AttackSpec,
                   e: float, norm: str, seed: int) -> str:
    """The unit key of one unbounded check's attack run."""
    return text_hash(tag, state_hash(model), tensor_hash(xs, ys), spec.fingerprint(), e, norm, seed)


def run_unbounded(model: nn.Module, x: Tensor, y: Tensor, norm: str, seed: int,
                  cfg: C.CheckConfig, units: Units, device: torch.device) -> C.CheckResult:
    """Run ``cfg.unbounded_attack`` with an eps covering the whole input box on a subset."""
    try:
        spec = parse_attack_spec(cfg.unbounded_attack)
    except AdvgeomError as e:
        return C.CheckResult("unbounded_attack", "skip", f"cannot run {cfg.unbounded_attack!r}: {e}")
    xs, ys, e = _unbounded_subset(x, y, norm, cfg, device)
    key = _unbounded_key("unbounded", model, xs, ys, spec, e, norm, seed)

    def run() -> float:
        payload = units(key, lambda: attack_unit(model, spec, xs, ys, clean_unit(model, xs, ys),
                                                 e, norm, unit_seed(seed, "unbounded")), tick=False)
        return percent(from_bools(payload["correct"]))

    return C.check_unbounded(run, cfg.unbounded_max_accuracy, f"{spec.label} at eps={e:g} ({norm})")


def run_unbounded_rejection(model: nn.Module, x: Tensor, y: Tensor, norm: str, seed: int,
                            cfg: C.CheckConfig, units: Units, device: torch.device,
                            specs: list[AttackSpec]) -> list[C.CheckResult]:
    """A model that can reject: the rejection-aware attacks of the evaluation (none:
    ``cfg.unbounded_rejection_attack``), each run without guided starts at an eps covering
    the whole input box on a subset, must together break all but ~0% of the subset's
    points that are accepted and correct (robust = adversarial rejected or correct under
    every one of them: the per-sample worst case, as the evaluation scores its attacks).
    Without rejection an unbounded attack wins by misclassifying; here it must also be
    accepted, which gradient ascent can fail to reach (features pushed outside every
    acceptance cone). The guided starts are removed because at this eps a guide is itself
    an accepted point of another class: they would pass the check by construction. A
    model without the ``angle_excess`` the adaptive attack steers by gets a warning: its
    robustness with rejection rests on attacks that ignore rejection."""
    if not callable(getattr(model, "angle_excess", None)):
        return [C.CheckResult("unbounded_rejection", "warn", "no rejection-aware attack can steer this model "
                              "(no angle_excess): its robustness with rejection is unverified")]
    aware = [s for s in specs if steers_rejection(s)]
    if not aware:
        try:
            aware = [parse_attack_spec(cfg.unbounded_rejection_attack)]
        except AdvgeomError as e:
            return [C.CheckResult("unbounded_rejection", "skip",
                                  f"cannot run {cfg.unbounded_rejection_attack!r}: {e}")]
    xs, ys, e = _unbounded_subset(x, y, norm, cfg, device)
    clean = clean_unit(model, xs, ys)
    target = from_bools(clean["correct"]) & from_bools(clean["accept"])
    if not bool(target.any()):
        return [C.CheckResult("unbounded_rejection", "skip", "no point of the subset is accepted and correct")]
    unguided = [AttackSpec(s.name, {k: v for k, v in s.kwargs.items() if k != "guides"}, attack=s.attack)
                if s.kwargs.get("guides") else s for s in aware]   # the default is no guides
    each: dict[str, float] = {}

    def run() -> float:
        ok = target.clone()
        for spec in unguided:
            key = _unbounded_key("unbounded-rejection", model, xs, ys, spec, e, norm, seed)
            adv = units(key, lambda spec=spec: attack_unit(model, spec, xs, ys, clean, e, norm,
                                                           unit_seed(seed, "unbounded-rejection")), tick=False)
            this = target & defended(from_bools(adv["correct"]), from_bools(adv["accept"]))
            each[spec.label] = 100.0 * float(this.sum()) / float(target.sum())
            ok &= this
        return 100.0 * float(ok.sum()) / float(target.sum())

    what = (unguided[0].label if len(unguided) == 1 else
            "the per-sample worst case over " + " + ".join(s.label for s in unguided))
    res = C.check_unbounded(run, cfg.unbounded_max_accuracy,
                            f"{what} at eps={e:g} ({norm}) without guided starts, on the "
                            f"{int(target.sum())} accepted and correct points of {len(ys)}",
                            name="unbounded_rejection", metric="robust accuracy with rejection")
    if len(unguided) > 1:
        res.details["each"] = each
        res = replace(res, message=res.message + " (each alone: "
                                  + ", ".join(f"{k} {v:.2f}%" for k, v in each.items()) + ")")
    res.details["metrics"] = ["robust_accuracy_with_rejection"]   # plain robustness is not concerned
    return [res]
