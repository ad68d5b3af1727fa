"""``advgeom reproduce NAME --profile P --plan`` (issue 27): what a run will do and what it
costs, in seconds, without training and without writing anything.

Design: the plan is the experiment itself, run on a :class:`PlanContext`. That context
is a smoke context (docs/design.md "Profiles and provenance") in a throw-away directory, so
the experiment's own code runs end to end in seconds, with three differences that make
it record the real run instead of the smoke one:

- :meth:`~PlanContext.fit` records the config the experiment asks for (steps and epochs
  counted by the training loop's own :class:`~advgeom.train.batches.Batches`) and hands
  back the untrained model instead of training;
- :meth:`~PlanContext.evaluate` and :meth:`~PlanContext.suite` record the attacks,
  eps, norm and points asked for, then run the smoke evaluation (one point, capped
  budgets, without the sanity checks) so that the experiment gets a real result to go on with;
- sweeps (:meth:`~PlanContext.first`) are not cut, so every model of a sweep is seen,
  and counts (:meth:`~PlanContext.size`) are cut but remember the real value
  (:class:`Planned`), which is what an evaluation records as its points.

Nothing is copied from the experiments' settings: whatever the run would train or
attack, the plan sees because the same code asks for it. With ``--smoke`` the plan
records the smoke run instead (capped configs, budgets, points and sweeps). The cost
model and its rules are :mod:`advgeom.experiments.cost`.
"""
from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import nn

from advgeom.attacks.spec import SMOKE_CAPS, AttackSpec, cap_spec, parse_attacks, parse_eps
from advgeom.eval.checks import CheckConfig
from advgeom.eval.rejection import can_reject
from advgeom.eval.suite import suite_specs
from advgeom.eval.units import unpack
from advgeom.experiments.base import Context, Experiment
from advgeom.experiments.cost import (RULES, Passes, attack_passes, budget, cpu_rate, duration,
                                      flops_text, forward_flops, rates, training_passes)
from advgeom.experiments.smoke import SMOKE_POINTS, one_thread, smoke_check_config
from advgeom.registry import get
from advgeom.results.store import open_store
from advgeom.train import TrainConfig, TrainResult, smoke_config
from advgeom.train.batches import Batches
from advgeom.train.build import build_model
from advgeom.train.preview import TrainPreview, preview

T = TypeVar("T")


class Planned(int):
    """A count as the plan's smoke execution uses it (the int) with the real run's
    value in :attr:`planned`."""

    planned: int


def _planned(capped: int, real: int) -> Planned:
    p = Planned(capped)
    p.planned = real
    return p


@dataclass
class PlannedTraining:
    """One model the run trains: its config, steps and passes per example."""

    config: TrainConfig
    steps: int
    per_epoch: int
    forward_flops: int
    per_example: Passes               # crafting + training passes of one example
    monitor: Passes                   # passes per monitored point
    monitor_points: int               # monitored points over the whole run
    fine_tuned: bool = False          # starts from another model's weights (its run directory
                                      # is keyed by them, unknown before that model is trained)

    @property
    def flops(self) -> float:
        return self.forward_flops * (self.steps * self.config.batch_size * self.per_example.forwards
                                     + self.monitor_points * self.monitor.forwards)


@dataclass
class PlannedEvaluation:
    """One evaluation the run makes: model, points, eps and each attack's passes."""

    model: str
    dataset: str
    norm: str
    eps: list[float]
    n: int
    forward_flops: int
    attacks: list[tuple[AttackSpec, dict[str, int], Passes]]
    cascade: bool = False
    checks: list[tuple[str, int, Passes]] = field(default_factory=list)   # unbounded checks: spec, points, passes

    @property
    def flops(self) -> float:
        per_point = 1 + sum(p.forwards for _, _, p in self.attacks) * len(self.eps)
        check = sum(points * p.forwards for _, points, p in self.checks)
        return self.forward_flops * (self.n * per_point + check)


@dataclass
class Plan:
    """What ``advgeom reproduce NAME --profile P`` will do, recorded by :class:`PlanContext`."""

    experiment: Experiment
    profile: str
    smoke: bool
    trainings: list[PlannedTraining] = field(default_factory=list)
    evaluations: list[PlannedEvaluation] = field(default_factory=list)

    @property
    def flops(self) -> tuple[float, float]:
        """``(training, evaluation)`` FLOPs."""
        return sum(t.flops for t in self.trainings), sum(e.flops for e in self.evaluations)


@dataclass
class PlanContext(Context):
    """A smoke context that records the real run's training and evaluations (module docstring)."""

    plan: Plan | None = None
    _flops: dict[int, int] = field(default_factory=dict, repr=False)

    # -- the experiment's own loops: sweeps whole, counts cut but remembered ------------

    def first(self, values: Sequence[T], smoke: int) -> Sequence[T]:
        return super().first(values, smoke) if self.plan.smoke else values

    def walk(self, values: Sequence[T], start: T, above: Callable[[T], bool]) -> list[T]:
        for v in values:    # the worst case of the search: every value
            above(v)
        return list(values)

    def size(self, value: int | None, smoke: int) -> int | None:
        capped = super().size(value, smoke)
        if self.plan.smoke or value is None or capped is None:
            return capped
        return _planned(capped, value)

    # -- training: recorded, not run ------------------------------------------------

    def fit(self, cfg: TrainConfig, model: nn.Module | None = None) -> TrainResult:
        planned = smoke_config(cfg) if self.plan.smoke else cfg
        net = copy.deepcopy(model) if model is not None else build_model(planned)
        net = net.to(self.device)
        batches = Batches(planned, torch.device("cpu"))
        if batches.online:
            example = batches.data.sample_batch(1, torch.Generator().manual_seed(0))[0][0]
        else:
            example = batches.images[0]
        k = getattr(batches.data, "num_classes", None) or getattr(net, "num_classes", None) or 10
        mon = planned.monitor
        mon_passes, mon_points = Passes(), 0
        if mon.every > 0:
            mon_passes = attack_passes(mon.attack, k) + Passes(forward=1)
            mon_points = (batches.total_steps() // mon.every) * (mon.size + mon.train_points + mon.test_points)
        self.plan.trainings.append(PlannedTraining(
            planned, batches.total_steps(), batches.per_epoch, self._forward(net, example),
            training_passes(planned.objective, planned.objective_kwargs, k), mon_passes, mon_points,
            fine_tuned=model is not None))
        return TrainResult(net, self.root / "plan", planned)

    # -- evaluations: recorded, then run as the smoke evaluation ---------------------------

    def evaluate(self, model: nn.Module, data: Any, attacks: Any, eps: Any, **kw: Any) -> Any:
        self._record(model, data, parse_attacks(attacks), eps, kw, cascade=False)
        return super().evaluate(model, data, attacks, eps, **{**kw, "checks": False})

    def suite(self, model: nn.Module, data: Any, eps: Any, *, version: str = "standard",
              norm: str = "linf", **kw: Any) -> Any:
        k = getattr(data, "num_classes", None) or getattr(model, "num_classes", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            specs = suite_specs(version, norm, k)
        self._record(model, data, specs, eps, {**kw, "norm": norm}, cascade=True)
        return super().suite(model, data, eps, version=version, norm=norm, **{**kw, "checks": False})

    def _forward(self, model: nn.Module, example: torch.Tensor) -> int:
        if id(model) not in self._flops:
            self._flops[id(model)] = forward_flops(model, example)
        return self._flops[id(model)]

    def _record(self, model: nn.Module, data: Any, specs: list[AttackSpec], eps: Any, kw: dict[str, Any],
                cascade: bool) -> None:
        x, y, k, name = unpack(data, None)
        k = k or getattr(model, "num_classes", None) or 10
        asked = kw.get("n")
        n = len(y) if asked is None else min(int(getattr(asked, "planned", asked)), len(y))
        config = kw.get("check_config") or CheckConfig()
        if self.plan.smoke:
            n = min(n, SMOKE_POINTS)
            specs = [cap_spec(s, SMOKE_CAPS) for s in specs]
            config = smoke_check_config(config, n)
        checks = []
        if kw.get("checks", True) and config.unbounded_subset > 0:
            # the evaluator's unbounded checks (advgeom.eval.units): plain, and for a model
            # that can reject each rejection-aware attack (else the configured one)
            unbounded = [config.unbounded_attack]
            if can_reject(model):
                unbounded += [s.label for s in specs if getattr(getattr(s.fn, "info", None), "rejection_aware", False)] \
                    or [config.unbounded_rejection_attack]
            m = min(config.unbounded_subset, n)
            checks = [(u, m, attack_passes(next((s for s in specs if s.label == u), u), k)) for u in unbounded]
        label = "/".join(str(v) for v in (kw.get("model_name") or type(model).__name__, kw.get("defense", "none")))
        self.plan.evaluations.append(PlannedEvaluation(
            label, kw.get("dataset") or name, kw.get("norm", "linf"), parse_eps(eps), n,
            self._forward(model, x[0]), [(s, budget(s, k), attack_passes(s, k)) for s in specs], cascade, checks))


def make_plan(name: str, profile: str, *, smoke: bool = False, device: str = "cpu", seed: int = 0) -> Plan:
    """Run experiment ``name`` on a :class:`PlanContext` in a temporary directory (removed
    afterwards; nothing is written anywhere else) and return what it recorded."""
    exp: Experiment = get("experiment", name)
    exp.check_profile(profile)
    plan = Plan(exp, profile, smoke)
    with tempfile.TemporaryDirectory(prefix="advgeom-plan-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        store = open_store(root / "plan.sqlite")
        ctx = PlanContext(name, profile, root, store, torch.device(device), seed, show_progress=False,
                          log=lambda m: None, smoke=True, plan=plan)
        try:
            with one_thread():          # the smoke execution: one-point batches
                exp.fn(ctx)
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()
    return plan


# ---------------------------------------------------------------------------
# the printed plan


def _budget_text(b: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in b.items()) or "-"


def _monitor_points(cfg: TrainConfig) -> str:
    """``"256 points"``, or with training curves ``"0 held-out + 1000 training + 1000 test points"``."""
    m = cfg.monitor
    if not (m.train_points or m.test_points):
        return f"{m.size} points"
    return f"{m.size} held-out + {m.train_points} training + {m.test_points} test points"


def standing(plan: Plan, root: Path, reuse: bool = False) -> list[TrainPreview | None]:
    """Where each planned training stands in the run directory ``root`` (what
    :func:`~advgeom.train.preview.preview` reads from its records: cached, resumable at a
    step, or to train); ``None`` for a fine-tuned model, whose directory is keyed by
    weights the plan does not have."""
    return [None if t.fine_tuned else preview(t.config, root, reuse=reuse) for t in plan.trainings]


def left_flops(plan: Plan, stand: list[TrainPreview | None]) -> tuple[float, float]:
    """Training FLOPs still to spend, ``(without, with)`` the fine-tuned models (whose
    standing the plan cannot preview): none for a cached model, the steps left of a
    resumable one, all of a model to train; a config planned twice counts once."""
    left, tuned, seen = 0.0, 0.0, set()
    for t, p in zip(plan.trainings, stand):
        if p is None:
            tuned += t.flops
        elif p.path not in seen:
            seen.add(p.path)
            if p.state == "train":
                left += t.flops
            elif p.state == "resume":
                left += t.flops * max(0.0, 1.0 - p.done / max(p.steps or t.steps, 1))
    return left, left + tuned


def _standing_lines(plan: Plan, stand: list[TrainPreview | None], root: Path,
                    search: tuple[Path, ...]) -> list[str]:
    """The summary of :func:`standing`: counts, training left and a time on this CPU."""
    counts = {k: sum(p is not None and p.state == k for p in stand) for k in ("cached", "resume", "train")}
    tuned = sum(p is None for p in stand)
    low, high = left_flops(plan, stand)
    train, ev = plan.flops
    rate, _ = cpu_rate(search)
    left = flops_text(high) if low == high else f"{flops_text(low)} to {flops_text(high)} (the fine-tuned ones)"
    return ["", f"In {root}: {counts['cached']} model(s) cached, {counts['resume']} resumable, {counts['train']} "
                "to train" + (f", {tuned} fine-tuned (not previewed)" if tuned else ""),
            f"- training left: {left} of {flops_text(train)}; with the whole evaluation (its cached units "
            f"are not previewed) up to about {duration((high + ev) / rate)} on this CPU at the rate above"]


def render(plan: Plan, search: tuple[Path, ...] = (), root: Path | None = None, reuse: bool = False) -> str:
    """The plan as text: models, evaluations, FLOPs and times under the stated rules; with
    ``root`` (a run directory that has trained something) also where each model stands
    there and the training left."""
    stand = standing(plan, root, reuse) if root is not None and (root / "train").is_dir() else None
    exp = plan.experiment
    cmd = f"advgeom reproduce {exp.name} --profile {plan.profile}" + (" --smoke" if plan.smoke else "")
    lines = [f"Plan of `{cmd}` (nothing trained, nothing written)", f"{exp.title}", ""]
    if plan.profile in exp.expected:
        lines += [f"Expected cost stated by the experiment: {exp.expected[plan.profile]}", ""]
    lines.append(f"Training: {len(plan.trainings)} model(s)")
    for i, t in enumerate(plan.trainings):
        c = t.config
        length = (f"{t.steps} steps" + (f" ({c.epochs} epochs x {t.per_epoch} steps)" if c.iterations <= 0
                                        else f" (iterations; {t.per_epoch} steps an epoch)"))
        lines.append(f"- {c.model} {c.model_kwargs or ''} on {c.dataset}, objective {c.objective} "
                     f"{c.objective_kwargs or ''}".replace("  ", " "))
        lines.append(f"    {length}, batch {c.batch_size}, {c.optimizer} lr {c.lr:g}; per example "
                     f"{t.per_example.grad:g} gradient pass(es) + {t.per_example.forward:g} forward(s) "
                     f"(crafting included); forward {t.forward_flops:,} FLOP"
                     + (f"; monitor: {c.monitor.attack} on {_monitor_points(c)} every {c.monitor.every} "
                        f"steps" if c.monitor.every > 0 else "") + f"; {flops_text(t.flops)}")
        if stand is not None:
            p = stand[i]
            lines.append(f"    in {root}: " + ("fine-tuned from another model's weights: not previewed"
                                                if p is None else p.text()))
    lines += ["", f"Evaluations: {len(plan.evaluations)}"]
    for e in plan.evaluations:
        kind = "standard suite (cascade; upper bound)" if e.cascade else "attacks"
        lines.append(f"- {e.model} on {e.dataset}: {e.n} test points, {e.norm} eps "
                     f"{', '.join(f'{v:g}' for v in e.eps)}, {kind}; forward {e.forward_flops:,} FLOP; "
                     f"{flops_text(e.flops)}")
        for spec, b, p in e.attacks:
            lines.append(f"    {spec.label}: {_budget_text(b)} -> {p.grad:g} gradient pass(es) + "
                         f"{p.forward:g} forward(s) per point and eps")
        for spec, points, _ in e.checks:
            lines.append(f"    check: unbounded {spec} on {points} points")
    train, ev = plan.flops
    lines += ["", f"Cost: training {flops_text(train)}, evaluation {flops_text(ev)}, total "
                  f"{flops_text(train + ev)}"]
    for machine, rate, why in rates(search):
        lines.append(f"- {machine}: {duration((train + ev) / rate)} at {rate / 1e9:,.0f} GFLOP/s "
                     f"sustained ({why})")
    if stand is not None:
        lines += _standing_lines(plan, stand, root, search)
    lines += ["", f"Rule: {RULES}. Forward FLOPs counted by torch.utils.flop_counter on one input "
                  "(matrix products and convolutions); rescale the times by your own sustained rate.",
              "Not counted: an experiment's own analyses (Jacobians, Monte-Carlo samples, figures) "
              "and attacks it calls directly."]
    return "\n".join(lines)
