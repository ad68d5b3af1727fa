"""The experiment framework: specs, the run context, outcomes compared with the papers.

An experiment is a function ``fn(ctx) -> Outcome`` registered with :func:`experiment`.
The :class:`Context` gives it cached training, resumable units of work, the results
store, figure paths and seeded generators; :func:`advgeom.experiments.runner.reproduce`
runs it and writes the report.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
from torch import nn

from advgeom.errors import AdvgeomError
from advgeom.distributed import world
from advgeom.progress import progress_bar
from advgeom.registry import register
from advgeom.results import ResultStore, Row
from advgeom.seeding import derive_seed, make_generator
from advgeom.stats import percent_interval
from advgeom.train import TrainConfig, fit

T = TypeVar("T")
# The profiles an experiment may declare (DESIGN.md "Profiles and provenance"): ``quick``
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

    def check_profile(self, profile: str) -> str:
        """``profile`` if this experiment declares it, else one clear error listing its profiles."""
        if profile not in self.profiles:
            raise AdvgeomError(f"experiment {self.name!r} has no profile {profile!r}; its profiles: "
                               f"{', '.join(self.profiles)}")
        return profile


def experiment(name: str, *, title: str, paper: str, reference: str | None = None,
               models: Callable[[str], dict[str, TrainConfig]] | None = None,
               profiles: tuple[str, ...] = ("quick", "paper"),
               expected: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx) -> Outcome`` as experiment ``name`` (``advgeom reproduce NAME``).

    ``models(profile) -> {label: TrainConfig}``, when given, names the models the
    experiment trains, so ``advgeom evaluate --experiment NAME`` can attack them.
    ``profiles``: the profiles it declares (of :data:`PROFILES`); any other is refused.
    ``expected``: per profile, its expected cost in words (the report header states it).
    """
    unknown = [p for p in (*profiles, *(expected or {})) if p not in PROFILES]
    if unknown or not profiles:
        raise AdvgeomError(f"experiment {name!r}: profiles must be among {', '.join(PROFILES)}, "
                           f"got {profiles!r}")

    def deco(fn: Callable[["Context"], Outcome]) -> Callable[["Context"], Outcome]:
        doc = (fn.__doc__ or "").strip()
        register("experiment", name)(Experiment(name, title, paper, reference, fn, doc, models,
                                                tuple(profiles), dict(expected or {})))
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


@dataclass
class Context:
    """Everything an experiment may touch: profile, cache, store, figures, device, seeds."""

    name: str
    profile: str
    root: Path
    store: ResultStore
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    show_progress: bool = True
    log: Callable[[str], None] = print
    reuse: bool = False  # accept cached work of other code versions (``--reuse``)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise AdvgeomError(f"unknown profile {self.profile!r}; profiles: {', '.join(PROFILES)}")
        self.root = Path(self.root)

    @property
    def quick(self) -> bool:
        return self.profile == "quick"

    @property
    def out_dir(self) -> Path:
        d = self.root / "reports" / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def reference(self, key: str) -> dict[str, Any]:
        return reference(key)

    def train(self, cfg: TrainConfig) -> nn.Module:
        """Train (or load from cache / resume) ``cfg``; the model comes back in eval mode."""
        return fit(cfg, root=self.root, device=self.device, progress=self.show_progress,
                   reuse=self.reuse).model.eval()

    def generator(self, offset: Any = 0) -> torch.Generator:
        """A generator seeded by (experiment, seed, offset), on the context's device."""
        return make_generator(derive_seed(self.name, self.seed, offset), self.device)

    def unit_key(self, key: str) -> str:
        return f"{self.name}/{self.profile}/seed{self.seed}/{key}"

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
                   dataset, norm, self.profile, int(n), extra)

    def record(self, rows: Iterable[Row]) -> None:
        """Store rows in the results database (one transaction; rank 0 only under torchrun)."""
        if world().main:
            self.store.add(list(rows))

    def figure_path(self, name: str) -> Path:
        return self.out_dir / (name if name.endswith(".png") else name + ".png")

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]:
        yield from progress_bar(total, desc, enabled=self.show_progress, iterable=iterable)
