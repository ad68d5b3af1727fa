"""Tidy result rows: one per (experiment, model, defense, attack, eps, seed, metric,
dataset, norm, profile, weights) and evaluated point set (``n`` and ``points``)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Row:
    """One measured number. ``value`` is a float (accuracy in percent unless ``metric`` says).

    ``n`` is the number of points (or samples) the number is measured on, and ``points``
    the identity of that point set, ``"<n>:<hash>"`` (:func:`point_set`; ``""`` when not
    known): rows of one evaluation on two point sets are two rows, never one replacing
    the other."""

    experiment: str
    model: str
    defense: str
    attack: str
    eps: float
    seed: int
    metric: str
    value: float
    dataset: str = ""
    norm: str = ""
    profile: str = ""
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    weights: str = ""  # identity of the evaluated weights (a hash); "" when not known
    points: str = ""   # identity of the evaluated point set, "<n>:<hash>"; "" when not known

    def key(self) -> tuple:
        """Identity of the row (everything but value and extra): two checkpoints of one
        architecture, or two point sets, keep separate rows."""
        return self.base_key() + (int(self.n), self.points)

    def base_key(self) -> tuple:
        """The identity without the point set (``n``, ``points``): what
        ``ResultStore.add(..., replace=True)`` replaces whatever the point set."""
        return (self.experiment, self.model, self.defense, self.attack, float(self.eps),
                int(self.seed), self.metric, self.dataset, self.norm, self.profile, self.weights)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row))
KEY_COLUMNS: tuple[str, ...] = ("experiment", "model", "defense", "attack", "eps", "seed", "metric",
                                "dataset", "norm", "profile", "weights", "n", "points")
BASE_KEY_COLUMNS: tuple[str, ...] = KEY_COLUMNS[:-2]


def point_set(n: int, digest: str) -> str:
    """The ``points`` identity of an evaluated point set: its size and the first 12 hex
    digits of a hash of its inputs and labels (or indices), e.g. ``"1000:3fa9c0d17b2e"``."""
    return f"{int(n)}:{digest[:12]}"


def row_from_record(rec: dict[str, Any]) -> Row:
    """Rebuild a :class:`Row` from a stored record (``extra`` as JSON text or dict)."""
    data = {k: rec[k] for k in COLUMNS if k in rec}
    if isinstance(data.get("extra"), str):
        data["extra"] = json.loads(data["extra"] or "{}")
    return Row(**data)


def check_row(row: Row) -> None:
    """Reject rows that would corrupt the store (non-finite values, empty names, a
    point set whose size is not the row's ``n``)."""
    from advgeom.errors import AdvgeomError

    if not row.experiment or not row.metric:
        raise AdvgeomError(f"result row needs an experiment and a metric: {row}")
    if not isinstance(row.value, (int, float)) or not math.isfinite(float(row.value)):
        raise AdvgeomError(f"result value must be a finite number, got {row.value!r} for {row.metric}")
    if not isinstance(row.points, str) or (row.points and row.points.split(":", 1)[0] != str(row.n)):
        raise AdvgeomError(f"result row's points {row.points!r} must be '' or '<n>:<hash>' with n = "
                           f"{row.n} (advgeom.results.rows.point_set)")
