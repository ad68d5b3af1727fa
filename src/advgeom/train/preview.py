"""What a training run is about to do, said before it starts: a config's names checked
without building or loading anything, and whether :func:`~advgeom.train.fit` will load
it from the cache, resume it or train it (how many steps, and how long the last
recorded run of it took), read from the run directory's records alone."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advgeom.config import config_hash
from advgeom.registry import check_arguments
from advgeom.train.build import run_dir
from advgeom.train.config import TrainConfig
from advgeom.train.state import training_code


def check_names(cfg: TrainConfig) -> None:
    """Raise a one-line :class:`~advgeom.errors.AdvgeomError` unless the config's data
    set, model and objective are registered and accept their keyword arguments; nothing
    is built, loaded or written."""
    check_arguments("dataset", cfg.dataset, {"split": "train", **cfg.dataset_kwargs})
    check_arguments("model", cfg.model, cfg.model_kwargs)
    check_arguments("defense", cfg.objective, cfg.objective_kwargs)


def _record(path: Path) -> dict[str, Any] | None:
    """The JSON copy of a checkpoint's record, or ``None`` when absent or unreadable
    (a preview never fails on a damaged record: :func:`fit` judges the checkpoint)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _seconds(record: dict[str, Any]) -> float | None:
    history = record.get("history") or []
    try:
        return float(history[-1]["seconds"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def duration_text(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"`` or ``"2 h 05 min"``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass(frozen=True)
class TrainPreview:
    """``state`` is ``cached`` (final weights of this code version, or any with
    ``reuse``), ``resume`` (a checkpoint at step ``done``) or ``train``; ``last_seconds``
    and ``last_steps`` describe the last recorded run of this config (another code
    version's included), ``None`` when none is recorded."""

    model: str
    key: str
    path: Path
    state: str
    steps: int | None          # total steps when the config fixes them (``iterations``)
    epochs: int
    done: int = 0
    last_seconds: float | None = None
    last_steps: int | None = None

    def text(self) -> str:
        """One line: ``will train cnn7 [hash]: 400 steps (last run: 3 min 20 s for 400 steps)``."""
        head = f"{self.model} [{self.key}]"
        if self.state == "cached":
            took = f" (trained in {duration_text(self.last_seconds)})" if self.last_seconds is not None else ""
            return f"cached: {head}{took}"
        total = (f"{self.steps} step{'s' if self.steps != 1 else ''}" if self.steps
                 else f"{self.epochs} epoch(s)")
        if self.state == "resume":
            so_far = f", {duration_text(self.last_seconds)} so far" if self.last_seconds is not None else ""
            return f"will resume training {head} at step {self.done} of {total}{so_far}"
        if self.last_seconds is None:
            return f"will train {head}: {total} (no earlier run of it recorded)"
        steps = f" for {self.last_steps} steps" if self.last_steps else ""
        return f"will train {head}: {total} (last run: {duration_text(self.last_seconds)}{steps})"


def preview(cfg: TrainConfig, root: str | Path = "runs", *, reuse: bool = False) -> TrainPreview:
    """What ``fit(cfg, root=root, reuse=reuse)`` (a registered model) will do, from the
    records in its run directory; reads only, never renames or writes."""
    out = run_dir(cfg, root)
    code = training_code()
    final, last = _record(out / "final.json"), _record(out / "last.json")
    head = {"model": cfg.model, "key": config_hash(cfg), "path": out, "epochs": cfg.epochs}
    steps = cfg.iterations or None
    if final is not None and (reuse or final.get("code") == code):
        return TrainPreview(state="cached", steps=steps, last_seconds=_seconds(final),
                            last_steps=final.get("step"), **head)
    if last is not None and (reuse or last.get("code") == code) and last.get("step"):
        return TrainPreview(state="resume", steps=last.get("total_steps") or steps, done=int(last["step"]),
                            last_seconds=_seconds(last), **head)
    # the latest finished run of this config, whatever code version wrote it (set-aside ones included)
    finished = [p for p in [out / "final.json", *out.glob("final.code-*.json")] if p.is_file()]
    for path in sorted(finished, key=lambda p: p.stat().st_mtime, reverse=True):
        record = _record(path)
        if record is not None and _seconds(record) is not None:
            return TrainPreview(state="train", steps=steps, last_seconds=_seconds(record),
                                last_steps=record.get("step"), **head)
    return TrainPreview(state="train", steps=steps, **head)
