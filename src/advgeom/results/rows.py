"""Tidy result rows: one per (experiment, model, defense, attack, eps, seed, metric, weights)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Row:
    """One measured number. ``value`` is a float (accuracy in percent unless ``metric`` says)."""

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

    def key(self) -> tuple:
        """Identity of the row (everything but value, n and extra): two checkpoints of one
        architecture keep separate rows."""
        return (self.experiment, self.model, self.defense, self.attack, float(self.eps),
                int(self.seed), self.metric, self.dataset, self.norm, self.profile, self.weights)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row))


def row_from_record(rec: dict[str, Any]) -> Row:
    """Rebuild a :class:`Row` from a stored record (``extra`` as JSON text or dict)."""
    data = {k: rec[k] for k in COLUMNS if k in rec}
    if isinstance(data.get("extra"), str):
        data["extra"] = json.loads(data["extra"] or "{}")
    return Row(**data)


def check_row(row: Row) -> None:
    """Reject rows that would corrupt the store (non-finite values, empty names)."""
    from advgeom.errors import AdvgeomError

    if not row.experiment or not row.metric:
        raise AdvgeomError(f"result row needs an experiment and a metric: {row}")
    if not isinstance(row.value, (int, float)) or not math.isfinite(float(row.value)):
        raise AdvgeomError(f"result value must be a finite number, got {row.value!r} for {row.metric}")
