"""Robustness evaluation: every attack at every eps on every sample, the per-sample
worst case over attacks, rejection-aware metrics, sanity checks, and batch-level
resumability through the results store (docs/design.md "Evaluating robustness honestly").
The units and their per-sample bookkeeping are in :mod:`advgeom.eval.units`; the
standard suite and the CLI entry point in :mod:`advgeom.eval.suite`.

Units of work are (batch, attack, eps) plus one clean unit per batch. Each finished
unit's per-sample outcome is stored atomically (``ResultStore.finish_unit``) under a
key made of the model's weights hash, the data hash, the batch, the attack spec, eps,
norm and seed; a rerun with the same store skips finished units, and a killed run
loses at most the unit in flight. Attack randomness comes from a generator seeded by
(seed, batch index, attack, eps, norm), so a resumed run reproduces an uninterrupted
one exactly.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from advgeom.attacks.base import canonical_norm
from advgeom.attacks.spec import AttackSpec, parse_attacks, parse_eps
from advgeom.distributed import World, all_gather_objects, world
from advgeom.errors import AdvgeomError
from advgeom.eval import checks as C
from advgeom.eval.masking import check_cascade_black_box, check_gradient_masking
from advgeom.eval.points import open_points
from advgeom.eval.bookkeeping import percent, unit_seed
from advgeom.eval.rejection import (adversarial_rejection_metrics, can_reject,
                                    clean_rejection_metrics, steers_rejection)
from advgeom.eval.units import (WORST, Outcomes, Payload, Units, attack_unit, check_classes,
                                check_readable, clean_unit, device_of, from_bools, outcomes,
                                run_unbounded, run_unbounded_rejection)
from advgeom.hashing import state_hash, text_hash
from advgeom.progress import progress_bar
from advgeom.results.env import environment
from advgeom.results.rows import Row, point_set
from advgeom.results.store import ResultStore
from advgeom.types import check_model_dtype

NORMS = ("linf", "l2")


@dataclass
class EvalResult:
    """Rows, the check report and the per-sample outcomes of one evaluation.

    Convention: the API's accuracies are fractions in [0, 1], exact from the counts
    (:meth:`accuracy` = correct / n); percent is for printed output only (the CLI, the
    reports) and for the stored rows, whose ``value`` column has always held percent
    (:meth:`percent` = correct * 100 / n, the same float as the row)."""

    rows: list[Row]
    checks: C.CheckReport
    specs: list[AttackSpec]
    eps: list[float]
    norm: str
    n: int
    clean_correct: Tensor                                   # (n,) bool
    robust: dict[tuple[str, float], Tensor]                 # (attack label | worst_case, eps) -> (n,) bool
    clean_accept: Tensor | None = None                      # rejecting models only
    adv_accept: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    units_run: int = 0
    units_skipped: int = 0
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0              # compute time of the units this call ran
    seconds_before: float = 0.0       # compute time the reused units recorded when they ran
    units_untimed: int = 0            # reused units that recorded no time

    @property
    def ok(self) -> bool:
        return self.checks.ok

    def value(self, metric: str, attack: str = WORST, eps: float = 0.0) -> float:
        """The value of one row (``metric``, ``attack``, ``eps``)."""
        for r in self.rows:
            if r.metric == metric and r.attack == attack and math.isclose(r.eps, float(eps)):
                return r.value
        raise NoSuchResult(f"no row {metric!r} of attack {attack!r} at eps {eps!r}; rows: "
                           + ", ".join(sorted({f"{r.metric} {r.attack}@{r.eps:g}" for r in self.rows})))

    def failed_checks(self, metric: str, attack: str = WORST, eps: float = 0.0) -> list[str]:
        """The names of the failed checks that mark the row (``metric``, ``attack``,
        ``eps``); empty when none does or the row is absent."""
        for r in self.rows:
            if r.metric == metric and r.attack == attack and math.isclose(r.eps, eps):
                return list(r.extra.get("failed_checks") or [])
        return []

    def robust_mask(self, attack: str = WORST, eps: float | None = None) -> Tensor:
        """The ``(n,)`` bool outcomes behind :meth:`correct`: point i correct clean
        (``attack="none"``) or robust against ``attack`` (a label, or ``worst_case``) at
        ``eps`` (default: the largest)."""
        if attack == "none":
            return self.clean_correct
        e = self.eps[-1] if eps is None else float(eps)
        for (label, at), mask in self.robust.items():
            if label == attack and math.isclose(at, e):
                return mask
        raise NoSuchResult(f"no outcome of attack {attack!r} at eps {e:g}; evaluated: none, "
                           + ", ".join(sorted({f"{a}@{at:g}" for a, at in self.robust})))

    def correct(self, attack: str = WORST, eps: float | None = None) -> int:
        """How many of the ``n`` points are correct clean (``attack="none"``) or robust
        against ``attack`` (a label, or ``worst_case``) at ``eps`` (default: the largest)."""
        return int(self.robust_mask(attack, eps).sum())

    def accuracy(self, attack: str = WORST, eps: float | None = None) -> float:
        """Clean accuracy (``attack="none"``) or robust accuracy of ``attack`` at ``eps``,
        a fraction in [0, 1]: exactly ``correct / n``."""
        return self.correct(attack, eps) / self.n

    def percent(self, attack: str = WORST, eps: float | None = None) -> float:
        """:meth:`accuracy` in percent for printing, ``correct * 100 / n`` (the stored row's value)."""
        return self.correct(attack, eps) * 100 / self.n


class NoSuchResult(AdvgeomError, KeyError):
    """A lookup of an :class:`EvalResult` for an attack, eps or metric it did not
    evaluate (a ``KeyError`` too, with the evaluated ones in its message)."""

    __str__ = Exception.__str__


# ---------------------------------------------------------------------------
# evaluate

BatchOutcome = tuple[Payload, dict[tuple[str, float], Payload]]   # clean unit, attack units


def evaluate(model: nn.Module, data: Any, attacks: str | AttackSpec | Iterable[str | AttackSpec],
             eps: str | float | Iterable[float], *, norm: str = "linf", batch_size: int = 256,
             n: int | None = None, store: ResultStore | None = None, experiment: str = "adhoc",
             model_name: str | None = None, defense: str = "none", dataset: str | None = None,
             profile: str = "", seed: int = 0, checks: bool = True, strict: bool = False,
             check_config: C.CheckConfig = C.CheckConfig(), progress: bool = True,
             cascade: bool = False, amp: bool = False) -> EvalResult:
    """Evaluate ``model`` on ``data`` (TensorData, ``(x, y)``, a torch ``Dataset`` or
    ``DataLoader``; its first ``n`` samples, in its order) against every attack at every
    eps; returns tidy rows (clean accuracy, robust
    accuracy per attack and eps, the per-sample ``worst_case`` over attacks, pass
    counts, rejection metrics for models that can abstain) and a check report.

    Per sample, an adversarial found at a smaller eps counts at every larger one.
    With ``cascade`` (the standard suite), the attacks run in the given order, each on
    the points every earlier attack left robust at that eps; an attack's row is then
    the robust accuracy after it and all earlier ones (AutoAttack's protocol).

    A loader with a fixed order is streamed: read once to hash the points (the stored
    point-set identity is that hash, the same as for the same tensors) and once to attack
    them in ``batch_size`` batches, holding only the labels, the first rows (for the
    checks) and the per-sample outcomes; a loader with a random sampler is read once into
    memory, with a warning (:mod:`advgeom.eval.points`).

    Batches are moved to the model's device. With ``store``, finished units are
    reused and the rows written at the end; ``strict=True`` raises
    :class:`~advgeom.eval.checks.CheckError` when a check fails (after storing).
    A failed check names the numbers it concerns in their rows (``extra["failed_checks"]``)
    and the printed tables mark them. ``amp``: attacks run under bf16 autocast (a GPU
    speed-up; the evaluator still scores every adversarial in float32).

    Under torchrun (:mod:`advgeom.distributed`) every rank calls ``evaluate`` with the
    same arguments: batch ``b`` is attacked by rank ``b % world size`` with the seeds of
    a single-process run, the outcomes are gathered on every rank after each round of
    batches, and rank 0 alone stores units and rows and runs the sanity checks (other
    ranks return the same rows with an empty check report).
    """
    _check_arguments(model, store, n=n, batch_size=batch_size, seed=seed, checks=checks, strict=strict,
                     progress=progress, cascade=cascade, amp=amp)
    norm = canonical_norm(norm)
    if norm not in NORMS:
        raise AdvgeomError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if batch_size <= 0:
        raise AdvgeomError(f"batch_size must be positive, got {batch_size}")
    specs, eps_list = parse_attacks(attacks), parse_eps(eps)
    for spec in specs:   # before any pass: a run with no correct point would never call it
        norms = getattr(getattr(spec.fn, "info", None), "norms", None)
        if norms and norm not in norms:
            raise AdvgeomError(f"attack {spec.label!r} does not support norm {norm!r} (it takes "
                               f"{', '.join(norms)})")
    if model.training:
        raise AdvgeomError("model is in training mode: call model.eval() before evaluating")
    points = open_points(data, n, batch_size, max(batch_size, check_config.unbounded_subset if checks else 0),
                         getattr(model, "num_classes", None))
    x, y, num_classes, data_name = points.head_x, points.head_y, points.num_classes, points.name
    check_model_dtype(model, x)
    device = device_of(model, x)
    check_classes(check_readable(model, x[:1].to(device)), points.labels, num_classes, data_name)
    model_name = model_name or type(model).__name__
    rejecting = can_reject(model)
    if cascade and rejecting:
        raise AdvgeomError("the cascade (standard suite) attacks the class only; a model that can "
                           "reject needs every attack on every point: evaluate without --suite")
    hash_before = state_hash(model)
    data_fp = points.digest
    w = world()
    if store is not None and store.run_id is None and w.main:
        store.start_run("evaluate", environment(device))

    starts = list(range(points.batches))
    bar = progress_bar(len(starts[w.rank::w.size]) * (1 + len(specs) * len(eps_list)),
                       f"evaluate {model_name}", enabled=progress and w.main)
    units = Units(store, bar, write=w.main)

    def run_batch(b: int) -> BatchOutcome:
        xb, yb = (t.to(device) for t in points.batch(b))
        base = (hash_before, data_fp, batch_size, b)
        clean = units(text_hash("clean", *base), lambda: clean_unit(model, xb, yb))
        out: dict[tuple[str, float], Payload] = {}
        for e in eps_list:
            alive: Tensor | None = None
            chain: list[str] = []   # cascade: the attacks run before, in order
            for spec in specs:
                key = text_hash("attack", *base, spec.fingerprint(), e, norm, seed,
                                *(("cascade", *chain) if cascade else ()), *(("amp",) if amp else ()))
                p = out[(spec.label, e)] = units(key, lambda: attack_unit(
                    model, spec, xb, yb, clean, e, norm, unit_seed(seed, b), alive, amp))
                if cascade:
                    chain.append(spec.fingerprint())
                    now = from_bools(p["correct"])
                    alive = now if alive is None else alive & now
        return clean, out

    try:
        done = _run_batches(run_batch, len(starts), units, store, w)
    finally:
        bar.close()
    clean_p = [done[b][0] for b in range(len(starts))]
    adv_p = {(s.label, e): [done[b][1][(s.label, e)] for b in range(len(starts))]
             for s in specs for e in eps_list}
    out = outcomes(clean_p, adv_p, specs, eps_list, cascade, rejecting)
    common = dict(experiment=experiment, model=model_name, defense=defense,
                  dataset=data_name if dataset is None else dataset, norm=norm,
                  profile=profile, seed=seed, n=points.n, weights=hash_before[:16],
                  points=point_set(points.n, data_fp))
    row = lambda attack, e, metric, value, **extra: Row(  # noqa: E731
        attack=attack, eps=float(e), metric=metric, value=float(value), extra=extra, **common)
    rows = _rows(row, out, adv_p, specs, eps_list, cascade)

    report = C.CheckReport()
    if checks and w.main:
        report = _checks(model, x, y, rows, adv_p, out.robust, norm, seed, batch_size, check_config,
                         cascade, units, device, hash_before, specs)
        C.mark_rows(rows, report)
        rows += check_rows(row, report, specs, eps_list, norm, cascade)
        for r in report.failed + report.warnings:
            if not strict or r.status == "warn":
                warnings.warn(f"evaluation check {r.name} {r.status}: {r.message}", stacklevel=2)
        C.collect(f"{model_name}: {', '.join(s.label for s in specs)} at {norm} eps "
                  f"{', '.join(f'{e:g}' for e in eps_list)}", report)

    if store is not None and w.main:
        store.add(rows)
    result = EvalResult(rows, report, specs, eps_list, norm, points.n, out.clean_correct, out.robust,
                        out.clean_accept, out.adv_accept, units.run, units.skipped, seconds=units.seconds,
                        seconds_before=units.seconds_before, units_untimed=units.untimed)
    if strict:
        report.raise_if_failed()
    return result


def _check_arguments(model: Any, store: Any, *, n: Any, **scalars: Any) -> None:
    """The types of :func:`evaluate`'s arguments, before anything runs: one clear error
    instead of a TypeError or AttributeError after the clean pass (or a truthy string
    silently taken for ``strict=True``)."""
    if not isinstance(model, nn.Module):
        raise AdvgeomError(f"model must be a torch.nn.Module in eval mode, got {type(model).__name__}")
    if store is not None and not isinstance(store, ResultStore):
        raise AdvgeomError(f"store must be a ResultStore (advgeom.results.ResultStore(path)), got "
                           f"{type(store).__name__}")
    for name, value in (("n", n), ("batch_size", scalars.pop("batch_size")), ("seed", scalars.pop("seed"))):
        if (value is not None or name != "n") and (isinstance(value, bool) or not isinstance(value, int)):
            raise AdvgeomError(f"{name} must be an integer, got {value!r}")
    if n is not None and n < 1:
        raise AdvgeomError(f"n must be a positive number of points (or None for all), got {n}")
    for name, value in scalars.items():
        if not isinstance(value, bool):
            raise AdvgeomError(f"{name} must be True or False, got {value!r}")


def _run_batches(run_batch: Callable[[int], BatchOutcome], count: int, units: Units,
                 store: ResultStore | None, w: World) -> dict[int, BatchOutcome]:
    """Every batch's outcome. Under torchrun, one round gives a batch to each rank; the
    outcomes are gathered on every rank, and rank 0 stores the units the others ran."""
    done: dict[int, BatchOutcome] = {}
    for r0 in range(0, count, w.size):   # one round: a batch per rank
        b = r0 + w.rank
        units.fresh = []
        got = run_batch(b) if b < count else None
        if not w.distributed:
            done[b] = got
            continue
        for rank, item in enumerate(all_gather_objects((got, units.fresh))):
            if item[0] is not None:
                done[r0 + rank] = item[0]
            if w.main and rank != w.rank and store is not None:
                for key, payload in item[1]:   # other ranks' work, stored by rank 0
                    store.finish_unit(key, payload, [])
    return done


# ---------------------------------------------------------------------------
# rows and checks


def check_rows(row: Callable[..., Row], report: C.CheckReport, specs: list[AttackSpec],
               eps_list: list[float], norm: str, cascade: bool) -> list[Row]:
    """One ``check:<name>`` row per check that ran (value 1 pass, 0.5 warn, 0 fail), keyed
    by this evaluation (attack ``check[<id>]``, the id a hash of its attacks, eps, norm
    and cascade): two evaluations of one model on one point set keep both sets of checks,
    and rerunning one replaces its own."""
    ident = text_hash("checks", *(s.fingerprint() for s in specs), *eps_list, norm, cascade, length=12)
    what = (f"{', '.join(s.label for s in specs)} at {norm} eps {', '.join(f'{e:g}' for e in eps_list)}"
            + (" (cascade)" if cascade else ""))
    return [row(f"check[{ident}]", 0.0, f"check:{r.name}", {"pass": 1.0, "warn": 0.5, "fail": 0.0}[r.status],
                status=r.status, message=r.message, evaluation=what)
            for r in report.results if r.status != "skip"]


def _rows(row: Callable[..., Row], out: Outcomes, adv_p: dict[tuple[str, float], list[Payload]],
          specs: list[AttackSpec], eps_list: list[float], cascade: bool) -> list[Row]:
    """The tidy rows of an evaluation (``row`` fills the columns they share)."""
    rejecting = out.clean_accept is not None
    rows = [row("none", 0.0, "clean_accuracy", percent(out.clean_correct))]
    if rejecting:
        rows += [row("none", 0.0, m, v)
                 for m, v in clean_rejection_metrics(out.clean_correct, out.clean_accept).items()]
    rej_rate = percent(~out.clean_accept) if rejecting else None
    for spec in specs:
        kind = "cascade" if cascade else spec.kind
        for e in eps_list:
            ps = adv_p[(spec.label, e)]
            attacked = sum(p["attacked"] for p in ps)
            extra = dict(kind=kind, base=spec.base_name, loss=spec.loss,
                         **({"steers_rejection": True} if rejecting and steers_rejection(spec) else {}),
                         max_norm=max(p["stats"]["max_norm"] for p in ps),
                         fragile=sum(p.get("fragile", 0) for p in ps),
                         counted_from_smaller_eps=out.rescued[(spec.label, e)])
            if cascade:
                extra.update(stage_kind=spec.kind, stage=[s.label for s in specs].index(spec.label) + 1)
            rows.append(row(spec.label, e, "robust_accuracy", percent(out.robust[(spec.label, e)]), **extra))
            if attacked:
                rows.append(row(spec.label, e, "forward_passes", sum(p["forwards"] for p in ps) / attacked))
                rows.append(row(spec.label, e, "backward_passes", sum(p["backwards"] for p in ps) / attacked))
            if rejecting:
                for m, v in adversarial_rejection_metrics(out.clean_correct, out.clean_accept,
                                                          out.defended[(spec.label, e)],
                                                          out.adv_accept[(spec.label, e)]).items():
                    rows.append(row(spec.label, e, m, v, clean_rejection_rate=rej_rate))
    for e in eps_list:
        rows.append(row(WORST, e, "robust_accuracy", percent(out.robust[(WORST, e)]),
                        attacks=[s.label for s in specs], cascade=cascade))
        if rejecting:
            ok = out.clean_correct & out.clean_accept
            for s in specs:
                ok = ok & out.defended[(s.label, e)]
            rows.append(row(WORST, e, "robust_accuracy_with_rejection", percent(ok),
                            attacks=[s.label for s in specs], clean_rejection_rate=rej_rate))
    return rows


def _checks(model: nn.Module, x: Tensor, y: Tensor, rows: list[Row],
            adv_p: dict[tuple[str, float], list[Payload]], robust: dict[tuple[str, float], Tensor],
            norm: str, seed: int, batch_size: int, cfg: C.CheckConfig, cascade: bool, units: Units,
            device: torch.device, hash_before: str, specs: list[AttackSpec]) -> C.CheckReport:
    """The sanity checks of one evaluation (docs/design.md "Evaluating robustness honestly");
    ``robust``: the per-sample outcomes, for the paired gradient-masking test."""
    report = C.CheckReport()
    stats = [{"attack": label, "eps": e, **p["stats"]} for (label, e), ps in adv_p.items() for p in ps]
    report.results += [
        C.check_threat_model(stats, norm, cfg.threat_tol),
        C.check_monotone(rows, cfg.monotone_tol),
        C.check_per_sample_monotone(rows),
        C.check_iterative_vs_single_step(rows, cfg.iterative_tol),
        (check_cascade_black_box if cascade else check_gradient_masking)(
            rows, robust, level=cfg.masking_level, points=cfg.masking_points),
        C.check_fragile(rows),
    ]
    xg, yg = x[:batch_size].to(device), y[:batch_size].to(device)
    report.results.append(C.check_gradients(model, xg, yg, cfg.zero_grad_max_fraction))
    with torch.no_grad():
        logits = model(xg)
    report.results += [C.check_saturated_loss(logits, yg, cfg.saturated_max_fraction),
                       C.check_softmax_outputs(logits)]
    if cfg.unbounded_subset > 0:
        report.results.append(run_unbounded(model, x, y, norm, seed, cfg, units, device))
        if can_reject(model):
            report.results += run_unbounded_rejection(model, x, y, norm, seed, cfg, units, device, specs)
    report.results += C.check_model_state(False, model.training, hash_before, state_hash(model))
    return report
