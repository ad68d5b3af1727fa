"""Where every setting comes from (issue 27): each setting that affects an experiment's
numbers carries its source, the paper (section, table or appendix), the official code
(repository and file) or an assumption of advgeom's with its reason, and the report
prints them as one table generated from the experiment's own configs, so the table
cannot drift from the code.

Training settings are read from each model's :class:`~advgeom.train.TrainConfig`
(:func:`active_fields`: the fields that take part in training it, bookkeeping such as
the checkpoint interval left out); the experiment declares their sources with
``@experiment(..., sources=fn)``, ``fn(profile) -> {key: Source}`` where a key is a
field name (every model) or ``"label.field"`` (one model, which wins). Evaluation
settings (points, attacks, eps) are recorded where the experiment uses them, with
:meth:`advgeom.experiments.base.Context.setting`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Mapping

from advgeom.errors import AdvgeomError
from advgeom.train import TrainConfig

KINDS = ("paper", "code", "assumption")

# TrainConfig fields that never change what is trained: the checkpoint interval, the seed
# (printed in the report header) and the execution options whose equivalence with the plain
# path is checked before they run (advgeom.train.execution).
BOOKKEEPING = frozenset({"checkpoint_every", "seed", "channels_last", "compile"})


# ---------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class Source:
    """Where a setting comes from: ``kind`` is ``paper`` (``where``: section, table or
    appendix), ``code`` (repository and file) or ``assumption`` (``where``: the reason)."""

    kind: str
    where: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdvgeomError(f"a setting's source is one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.where.strip():
            raise AdvgeomError(f"a {self.kind} source must say where (section, file or reason)")

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}"


def paper(where: str) -> Source:
    """A setting the paper states (``where``: e.g. ``"Madry et al. 2018, Section 5"``)."""
    return Source("paper", where)


def code(where: str) -> Source:
    """A setting of the official code (``where``: repository and file)."""
    return Source("code", where)


def assumption(reason: str) -> Source:
    """A setting advgeom chose where the paper is silent or cannot be followed here."""
    return Source("assumption", reason)


@dataclass(frozen=True)
class Setting:
    """One row of a report's settings table."""

    scope: str    # the model label, or "evaluation" / "all"
    name: str
    value: str
    source: Source


# ---------------------------------------------------------------------------
# training settings from a config


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def active_fields(cfg: TrainConfig) -> dict[str, str]:
    """``{field: value}`` of the settings that take part in training ``cfg``: every field
    but :data:`BOOKKEEPING`, leaving out those the config switches off (momentum under
    Adam, the schedule parameters of schedules not in use, empty keyword tables, the
    iteration count when epochs count and the reverse, a monitor that never runs). The
    monitor counts when on: it holds out training points and may select the weights."""
    out: dict[str, str] = {}
    schedule_fields = {"step": ("milestones", "gamma", "schedule_unit"), "piecewise": ("lr_knots", "lr_factors"),
                       "onecycle": ("onecycle_pct", "onecycle_div", "onecycle_final_div")}
    unused = {f for s, fs in schedule_fields.items() if s != cfg.schedule for f in fs}
    if cfg.schedule == "step" and not cfg.milestones:
        unused |= {"milestones", "gamma", "schedule_unit"}
    if cfg.optimizer != "sgd":
        unused.add("momentum")
    unused.add("epochs" if cfg.iterations > 0 else "iterations")
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in BOOKKEEPING or f.name in unused:
            continue
        if f.name.endswith("_kwargs") and not value:
            continue
        if f.name == "stiefel" and not value:   # an option off by default (footnote 4's constraint)
            continue
        if f.name == "monitor":
            if value.every <= 0:
                continue
            points = [f"{n} {what}" for n, what in ((value.size, "held-out training points"),
                                                    (value.train_points, "first training points"),
                                                    (value.test_points, "first test points")) if n]
            value = (f"every {value.every} steps, {value.attack} at eps {value.eps or 'of the objective'} on "
                     + ", ".join(points) + (", keeps the best weights" if value.keep_best else ""))
        if f.name == "schedule" and value == "step" and not cfg.milestones:
            value = "constant"
        if f.name == "train_size" and value == 0:
            value = "all"
        out[f.name] = _fmt(value)
    return out


def training_settings(configs: Mapping[str, TrainConfig],
                      sources: Mapping[str, Source]) -> tuple[list[Setting], list[str]]:
    """The settings rows of ``configs`` (``{label: TrainConfig}``) with their sources, and
    the ``label.field`` keys that have none (a declaration to complete)."""
    rows: list[Setting] = []
    missing: list[str] = []
    for label, cfg in configs.items():
        for name, value in active_fields(cfg).items():
            src = sources.get(f"{label}.{name}", sources.get(name))
            if src is None:
                missing.append(f"{label}.{name}")
                continue
            rows.append(Setting(label, name, value, src))
    return rows, missing


def missing_sources(configs: Mapping[str, TrainConfig], sources: Mapping[str, Source]) -> list[str]:
    """``label.field`` of every active training setting without a source."""
    return training_settings(configs, sources)[1]


# ---------------------------------------------------------------------------
# the report's table


def settings_markdown(rows: Iterable[Setting], missing: Iterable[str] = (),
                      models: Iterable[str] = ()) -> list[str]:
    """The "Settings and their sources" section: one row per (setting, value, source),
    models that share it named together ("all" when they are every one of ``models``,
    the experiment's model labels), training settings first in field order."""
    everyone = set(models)
    merged: dict[tuple[str, str, Source], list[str]] = {}
    for s in rows:
        merged.setdefault((s.name, s.value, s.source), []).append(s.scope)
    lines = ["## Settings and their sources", "",
             "Generated from the experiment's configs (bookkeeping such as checkpoint intervals left out).", "",
             "| setting | models | value | source |", "|---|---|---|---|"]
    for (name, value, src), scopes in merged.items():
        cell = lambda t: str(t).replace("|", "/")   # noqa: E731 (a table cell)
        who = "all" if len(everyone) > 1 and set(scopes) == everyone else ", ".join(dict.fromkeys(scopes))
        lines.append(f"| {cell(name)} | {cell(who)} | {cell(value)} | {cell(src)} |")
    gaps = list(missing)
    if gaps:
        lines += ["", f"**Settings without a declared source**: {', '.join(gaps)}."]
    return lines + [""]


SourcesFn = Callable[[str], Mapping[str, Source]]
