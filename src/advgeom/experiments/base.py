"""The experiment framework: specs, the run context, outcomes compared with the papers.

An experiment is a function ``fn(ctx) -> Outcome`` registered with :func:`experiment`.
The :class:`Context` gives it cached training, resumable units of work, the results
store, figure paths and seeded generators; :func:`advgeom.experiments.runner.reproduce`
runs it and writes the report.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from advgeom.attacks.spec import SMOKE_CAPS, cap_spec, parse_attacks
from advgeom.config import config_hash
from advgeom.errors import AdvgeomError
from advgeom.distributed import world
from advgeom.eval.runner import EvalResult, evaluate
from advgeom.eval.suite import standard_suite
from advgeom.experiments.settings import Setting, Source, SourcesFn
from advgeom.experiments.smoke import SMOKE, SMOKE_POINTS, pick_points, smoke_check_config
from advgeom.progress import progress_bar
from advgeom.registry import register
from advgeom.results import ResultStore, Row
from advgeom.seeding import derive_seed, make_generator
from advgeom.stats import percent_interval
from advgeom.train import TrainConfig, TrainResult, fit, smoke_config
from advgeom.train.preview import duration_text

T = TypeVar("T")
# The profiles an experiment may declare (docs/design.md "Profiles and provenance"): ``quick``
# (a smoke run of minutes that says what it scaled down), ``cpu`` (the paper's model, threat
# model and attacks with a compressed schedule from published fast recipes, at most 2 h of
# training and 1 h of evaluation per model on 2 idle cores, >= 1,000 test points) and
# ``paper`` (the paper's settings).
PROFILES = ("quick", "cpu", "paper")

# ---------------------------------------------------------------------------
# outcome


@dataclass(frozen=True)
class Comparison:
    """One measured number next to the paper's (``None`` where one side has none)."""

    label: str
    measured: float | None
    paper: float | None
    unit: str = "%"
    note: str = ""
    n: int = 0   # points behind a measured accuracy (unit "%"): the report gives its interval

    @property
    def gap(self) -> float | None:
        if self.measured is None or self.paper is None:
            return None
        return self.measured - self.paper

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval (percent) of a measured accuracy on ``n`` points."""
        if self.unit != "%" or self.n <= 0 or self.measured is None:
            return None
        return percent_interval(self.measured, self.n)

    @property
    def paper_inside(self) -> bool | None:
        """Whether the paper's number lies inside the interval (None: nothing to compare)."""
        ci = self.interval
        if ci is None or self.paper is None:
            return None
        return ci[0] <= self.paper <= ci[1]


@dataclass
class Outcome:
    """What an experiment returns: comparisons, figure files and notes for the report.

    ``checks``: ``(label, CheckReport)`` of the evaluations behind the numbers; the
    runner adds every :func:`advgeom.eval.evaluate` made while the experiment ran, and
    ``advgeom reproduce`` exits 1 when one of them failed (unless ``--no-strict``)."""

    comparisons: list[Comparison] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[tuple[str, Any]]:
        """``(evaluation label, CheckResult)`` of every failed check."""
        return [(label, r) for label, rep in self.checks for r in rep.failed]

    @property
    def ok(self) -> bool:
        return not self.failed_checks


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: a paper table or figure and the function reproducing it."""

    name: str
    title: str
    paper: str
    reference: str | None
    fn: Callable[["Context"], Outcome]
    description: str = ""
    models: Callable[[str], dict[str, TrainConfig]] | None = None
    profiles: tuple[str, ...] = ("quick", "paper")
    expected: dict[str, str] = field(default_factory=dict)   # profile -> its expected cost, in words
    sources: SourcesFn | None = None   # profile -> {field or "label.field": Source} (settings.py)

    def check_profile(self, profile: str) -> str:
        """``profile`` if this experiment declares it, else one clear error listing its profiles."""
        if profile not in self.profiles:
            raise AdvgeomError(f"experiment {self.name!r} has no profile {profile!r}; its profiles: "
                               f"{', '.join(self.profiles)}")
        return profile


def experiment(name: str, *, title: str, paper: str, reference: str | None = None,
               models: Callable[[str], dict[str, TrainConfig]] | None = None,
               profiles: tuple[str, ...] = ("quick", "paper"),
               expected: dict[str, str] | None = None,
               sources: SourcesFn | None = None) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx) -> Outcome`` as experiment ``name`` (``advgeom reproduce NAME``).

    ``models(profile) -> {label: TrainConfig}``, when given, names the models the
    experiment trains, so ``advgeom evaluate --experiment NAME`` can attack them.
    ``profiles``: the profiles it declares (of :data:`PROFILES`); any other is refused.
    ``expected``: per profile, its expected cost in words (the report header states it).
    ``sources(profile) -> {key: Source}``: where each training setting of ``models``
    comes from (:mod:`advgeom.experiments.settings`); the report prints them.
    """
    unknown = [p for p in (*profiles, *(expected or {})) if p not in PROFILES]
    if unknown or not profiles:
        raise AdvgeomError(f"experiment {name!r}: profiles must be among {', '.join(PROFILES)}, "
                           f"got {profiles!r}")

    def deco(fn: Callable[["Context"], Outcome]) -> Callable[["Context"], Outcome]:
        doc = (fn.__doc__ or "").strip()
        register("experiment", name)(Experiment(name, title, paper, reference, fn, doc, models,
                                                tuple(profiles), dict(expected or {}), sources))
        return fn

    return deco


# ---------------------------------------------------------------------------
# reference numbers


def reference_table() -> dict[str, Any]:
    """The papers' numbers (packaged copy of shared/reference-results.toml) plus the
    published numbers of the adversarial-training baselines (reference_baselines.toml)."""
    files = resources.files("advgeom.experiments")
    table = tomllib.loads(files.joinpath("reference_results.toml").read_text())
    extra = tomllib.loads(files.joinpath("reference_baselines.toml").read_text())
    overlap = set(table) & set(extra)
    if overlap:
        raise AdvgeomError(f"reference tables defined twice: {sorted(overlap)}")
    return {**table, **extra}


def reference(key: str) -> dict[str, Any]:
    """One table of the reference numbers by dotted key, e.g. ``"spheres.quadratic"``."""
    node: Any = reference_table()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise AdvgeomError(f"no reference table {key!r} in reference_results.toml")
        node = node[part]
    return node


# ---------------------------------------------------------------------------
# context


def time_text(seconds: float | None) -> str:
    """RUN.md's times: :func:`advgeom.train.preview.duration_text` (``"3 min 20 s"``), one
    decimal under 10 s (unit timings are short), ``"not recorded"`` for ``None``."""
    if seconds is None:
        return "not recorded"
    return f"{seconds:.1f} s" if seconds < 10 else duration_text(seconds)


@dataclass(frozen=True)
class TrainedModel:
    """One :meth:`Context.fit`: which model, whether this run trained it, its time."""

    model: str
    config: str
    status: str          # "trained", "resumed at step k", "cached"
    steps: int
    seconds: float | None

    @classmethod
    def of(cls, res: TrainResult) -> "TrainedModel":
        last = res.history[-1] if res.history else {}
        status = ("cached" if res.cached else f"resumed at step {res.resumed_from}" if res.resumed_from
                  else "trained")
        seconds = last.get("seconds")
        return cls(res.config.model, config_hash(res.config), status, int(last.get("step", 0)),
                   float(seconds) if isinstance(seconds, (int, float)) else None)

    def line(self) -> str:
        return (f"| {self.model} | {self.config} | {self.status} | {self.steps} | "
                f"{time_text(self.seconds)} |")


@dataclass
class EvalTime:
    """The evaluations of one model in one run: compute time now and as recorded before."""

    count: int = 0
    run: int = 0
    seconds: float = 0.0
    reused: int = 0
    seconds_before: float = 0.0
    untimed: int = 0

    def add(self, res: EvalResult) -> None:
        self.count += 1
        self.run += res.units_run
        self.seconds += res.seconds
        self.reused += res.units_skipped
        self.seconds_before += res.seconds_before
        self.untimed += res.units_untimed

    def line(self) -> str:
        before = time_text(self.seconds_before) if self.reused else "-"
        if self.untimed:
            before += f" ({self.untimed} of {self.reused} units recorded no time: computed before units recorded it)"
        return f"{self.count} | {self.run} | {time_text(self.seconds)} | {self.reused} | {before}"


@dataclass
class Context:
    """Everything an experiment may touch: profile, cache, store, figures, device, seeds.

    ``smoke`` (``--smoke``, :mod:`advgeom.experiments.smoke`): the profile with every loop
    that grows with it capped, centrally in :meth:`fit` / :meth:`train` (the smoke cut of
    the config), :meth:`evaluate` / :meth:`suite` (points, batch, attack budgets) and, for
    an experiment's own loops, :meth:`size`, :meth:`first`, :meth:`capped` and
    :meth:`smoke_kwargs`; each returns its argument unchanged when ``smoke`` is off."""

    name: str
    profile: str
    root: Path
    store: ResultStore
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    show_progress: bool = True
    log: Callable[[str], None] = print
    reuse: bool = False  # accept cached work of other code versions (``--reuse``)
    smoke: bool = False  # ``--smoke``: every loop that grows with the profile capped
    _picked: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False)  # smoke points
    settings: list[Setting] = field(default_factory=list)  # evaluation settings (:meth:`setting`)
    trained: list[TrainedModel] = field(default_factory=list)  # every fit, for RUN.md
    evaluated: dict[str, EvalTime] = field(default_factory=dict)  # time per evaluated model, for RUN.md

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise AdvgeomError(f"unknown profile {self.profile!r}; profiles: {', '.join(PROFILES)}")
        self.root = Path(self.root)

    @property
    def quick(self) -> bool:
        return self.profile == "quick"

    @property
    def label(self) -> str:
        """The profile as rows and reports name it: ``cpu``, or ``cpu+smoke`` under ``--smoke``."""
        return f"{self.profile}+{SMOKE}" if self.smoke else self.profile

    # -- sizes: the experiments' own loops -------------------------------------------

    def size(self, value: int | None, smoke: int) -> int | None:
        """``value`` (a count that grows with the profile; ``None``: all), or under
        ``--smoke`` at most ``smoke``."""
        if not self.smoke:
            return value
        return smoke if value is None else min(value, smoke)

    def first(self, values: Sequence[T], smoke: int) -> Sequence[T]:
        """``values`` (a sweep), or under ``--smoke`` its first ``smoke`` entries."""
        if not self.smoke:
            return values
        head = list(values)[:smoke]
        return tuple(head) if isinstance(values, tuple) else head

    def walk(self, values: Sequence[T], start: T, above: Callable[[T], bool]) -> list[T]:
        """A search over a sorted sweep: visit ``values`` from ``start``, one step up while
        ``above(value)`` and one step down otherwise, until both sides of the turn have
        been visited or an end is reached; returns the visited values in order. When
        ``above`` turns from true to false once along ``values`` (a monotone quantity
        against a target), the values next to the turn are always among those visited,
        so a rule "closest to the target" picks what a full sweep would pick. The plan
        (:class:`advgeom.experiments.plan.PlanContext`) visits every value: the cost of
        the worst case."""
        seq = list(values)
        if start not in seq:
            raise AdvgeomError(f"walk: start {start!r} is not one of {seq}")
        i, seen = seq.index(start), set()
        visited: list[T] = []
        while 0 <= i < len(seq) and i not in seen:
            seen.add(i)
            visited.append(seq[i])
            i += 1 if above(seq[i]) else -1
        return visited

    def smoke_kwargs(self, **caps: Any) -> dict[str, Any]:
        """Keyword arguments capping a function's own loops under ``--smoke`` (``caps``),
        none otherwise (the function's defaults apply): ``f(x, **ctx.smoke_kwargs(steps=2))``."""
        return dict(caps) if self.smoke else {}

    def capped(self, settings: Any, **caps: int) -> Any:
        """``settings`` (a dict or a dataclass of a profile's settings), or under
        ``--smoke`` a copy with each named entry capped: a count by :meth:`size`, a
        sweep (tuple or list) by :meth:`first`."""
        if not self.smoke:
            return settings
        get = settings.get if isinstance(settings, dict) else lambda k: getattr(settings, k)
        new = {k: self.first(get(k), cap) if isinstance(get(k), (list, tuple)) else self.size(get(k), cap)
               for k, cap in caps.items()}
        return {**settings, **new} if isinstance(settings, dict) else dataclasses.replace(settings, **new)

    @property
    def out_dir(self) -> Path:
        d = self.root / "reports" / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def reference(self, key: str) -> dict[str, Any]:
        return reference(key)

    def setting(self, name: str, value: Any, source: Source, scope: str = "evaluation") -> Any:
        """Record a setting that affects the numbers (test points, attacks, eps, ...) with
        its source for the report's settings table; returns ``value`` so the experiment
        can use it where it is set: ``n = ctx.setting("test points", 1000, paper(...))``."""
        shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        self.settings.append(Setting(scope, name, shown, source))
        return value

    # -- training and evaluation, capped centrally under --smoke -----------------------

    def config(self, cfg: TrainConfig) -> TrainConfig:
        """The config this context trains: ``cfg``, or its smoke cut (:func:`smoke_config`)."""
        return smoke_config(cfg) if self.smoke else cfg

    def fit(self, cfg: TrainConfig, model: nn.Module | None = None) -> TrainResult:
        """Train (or load from cache / resume) ``cfg`` (capped under ``--smoke``), from
        ``model`` when given (fine-tuning); the whole :class:`TrainResult`."""
        res = fit(self.config(cfg), model=model, root=self.root, device=self.device,
                  progress=self.show_progress, reuse=self.reuse)
        self.trained.append(TrainedModel.of(res))
        return res

    def train(self, cfg: TrainConfig, model: nn.Module | None = None) -> nn.Module:
        """Train (or load from cache / resume) ``cfg``; the model comes back in eval mode."""
        return self.fit(cfg, model).model.eval()

    def _eval_kwargs(self, kw: dict[str, Any]) -> dict[str, Any]:
        out = dict(store=self.store, experiment=self.name, profile=self.label, seed=self.seed,
                   progress=self.show_progress)
        out.update(kw)
        if self.smoke:
            n = self.size(out.get("n"), SMOKE_POINTS)
            out.update(n=n, batch_size=n, check_config=smoke_check_config(out.get("check_config"), n))
        return out

    def evaluate(self, model: nn.Module, data: Any, attacks: Any, eps: Any, **kw: Any) -> EvalResult:
        """:func:`advgeom.eval.evaluate` with the context's store, experiment, profile,
        seed and progress filled in (``kw`` may set any other argument). Under
        ``--smoke`` it attacks :data:`~advgeom.experiments.smoke.SMOKE_POINTS` points
        (:func:`~advgeom.experiments.smoke.pick_points`) in one batch, with every attack's
        budget capped by :func:`cap_spec`."""
        if self.smoke:
            attacks = [cap_spec(s) for s in parse_attacks(attacks)]
            data = pick_points(model, data, self._picked)
        return self._timed(evaluate(model, data, attacks, eps, **self._eval_kwargs(kw)), model, kw)

    def suite(self, model: nn.Module, data: Any, eps: Any, *, version: str = "standard",
              norm: str = "linf", **kw: Any) -> EvalResult:
        """AutoAttack's ``version`` suite (:func:`advgeom.eval.standard_suite`) with the
        context's settings, capped like :meth:`evaluate` under ``--smoke``."""
        if self.smoke:
            data = pick_points(model, data, self._picked)
        return self._timed(standard_suite(model, data, eps, version=version, norm=norm,
                                          caps=SMOKE_CAPS if self.smoke else None, **self._eval_kwargs(kw)),
                           model, kw)

    def _timed(self, res: EvalResult, model: nn.Module, kw: dict[str, Any]) -> EvalResult:
        """Add an evaluation's compute time to its model's entry of :attr:`evaluated`."""
        label = "/".join(str(v) for v in (kw.get("model_name") or type(model).__name__,
                                          kw.get("defense") or "none"))
        self.evaluated.setdefault(label, EvalTime()).add(res)
        return res

    def time_lines(self) -> list[str]:
        """RUN.md's "Time per model" section: every model trained (or found cached) and
        the compute time of every model's evaluations (:attr:`trained`, :attr:`evaluated`)."""
        if not self.trained and not self.evaluated:
            return []
        out = ["## Time per model", ""]
        if self.trained:
            out += ["Training (the time is the training record's, summed over every session that "
                    "trained the model, resumes included):", "",
                    "| model | config | this run | steps | training time |", "|---|---|---|---|---|"]
            out += [t.line() for t in self.trained] + [""]
        if self.evaluated:
            out += ["Evaluation (the compute time of its units of work: those this run computed, and "
                    "those it reused as recorded when they were computed):", "",
                    "| model / defense | evaluations | units computed now | time now | units reused | "
                    "their recorded time |", "|---|---|---|---|---|---|"]
            out += [f"| {k} | {v.line()} |" for k, v in self.evaluated.items()] + [""]
        return out

    def generator(self, offset: Any = 0) -> torch.Generator:
        """A generator seeded by (experiment, seed, offset), on the context's device."""
        return make_generator(derive_seed(self.name, self.seed, offset), self.device)

    def unit_key(self, key: str) -> str:
        return f"{self.name}/{self.label}/seed{self.seed}/{key}"

    def cached(self, key: str, fn: Callable[[], T]) -> T:
        """Run a JSON-serialisable unit of work once; reruns return the stored payload."""
        full = self.unit_key(key)
        hit = self.store.unit(full)
        if hit is not None:
            return hit
        payload = fn()
        if world().main:  # under torchrun every rank computes it, rank 0 stores it
            self.store.finish_unit(full, payload)
        return payload

    def row(self, *, model: str, metric: str, value: float, defense: str = "none",
            attack: str = "none", eps: float = 0.0, dataset: str = "", norm: str = "",
            n: int = 0, **extra: Any) -> Row:
        """A result row of this experiment (profile and seed filled in)."""
        return Row(self.name, model, defense, attack, float(eps), self.seed, metric, float(value),
                   dataset, norm, self.label, int(n), extra)

    def record(self, rows: Iterable[Row]) -> None:
        """Store rows in the results database (one transaction; rank 0 only under torchrun)."""
        if world().main:
            self.store.add(list(rows))

    def figure_path(self, name: str) -> Path:
        return self.out_dir / (name if name.endswith(".png") else name + ".png")

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]:
        yield from progress_bar(total, desc, enabled=self.show_progress, iterable=iterable)
