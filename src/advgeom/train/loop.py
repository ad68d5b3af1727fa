"""The training loop: registered objectives, step schedules, cached and resumable runs.

Determinism without global state: model initialization and every step run inside
``torch.random.fork_rng`` seeded from ``(cfg.seed, step)``, data order comes from
per-epoch generators, so a run killed at any point and restarted from its last
checkpoint ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from advgeom import __version__
from advgeom.config import config_hash, to_dict
from advgeom.data import load
from advgeom.errors import CheckpointError
from advgeom.models import create_model
from advgeom.progress import progress_bar
from advgeom.registry import create
from advgeom.train.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from advgeom.train.config import TrainConfig

# ---------------------------------------------------------------------------
# seeds and builders


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of values (stable across processes)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg``, initialized from ``cfg.seed`` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", cfg.seed))
        return create_model(cfg.model, **cfg.model_kwargs)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Step schedule: ``lr * gamma ** (number of milestones passed)``."""
    t = step if cfg.schedule_unit == "iteration" else step // max(steps_per_epoch, 1)
    return cfg.lr * cfg.gamma ** sum(t >= m for m in cfg.milestones)


def run_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    """Cache directory of a config: ``root/train/<model>-<hash>``."""
    return Path(root) / "train" / f"{cfg.model}-{config_hash(cfg)}"


# ---------------------------------------------------------------------------
# batches


class _Batches:
    """Deterministic mini-batches: epoch-seeded permutations, or online sampling."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.data = load(cfg.dataset, "train", **cfg.dataset_kwargs)
        self.online = callable(getattr(self.data, "sample_batch", None))
        n = len(self.data) if not self.online else 0
        if cfg.train_size and not self.online:
            n = min(n, cfg.train_size)
        self.n = n
        self.per_epoch = max(1, n // cfg.batch_size) if not self.online else 1

    def total_steps(self) -> int:
        if self.cfg.iterations > 0:
            return self.cfg.iterations
        return self.cfg.epochs * self.per_epoch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if self.online:
            g = torch.Generator().manual_seed(derive_seed("batch", cfg.seed, step))
            x, y = self.data.sample_batch(cfg.batch_size, g)
        else:
            epoch, k = divmod(step, self.per_epoch)
            g = torch.Generator().manual_seed(derive_seed("perm", cfg.seed, epoch))
            perm = torch.randperm(self.n, generator=g)
            idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            x, y = self.data.images[idx], self.data.labels[idx]
        return x.to(self.device), y.to(self.device)


# ---------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    model: nn.Module
    path: Path
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    cached: bool = False


def _sidecar(cfg: TrainConfig, step: int, total: int, history: list, final: bool) -> dict[str, Any]:
    return {"config": to_dict(cfg), "hash": config_hash(cfg), "step": step, "total_steps": total,
            "final": final, "history": history, "advgeom": __version__, "torch": torch.__version__}


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None, sidecar: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    flatten_state("model/", model.state_dict(), tensors, meta)
    if opt is not None:
        flatten_state("optim/", opt.state_dict(), tensors, meta)
    sidecar = dict(sidecar, meta=meta)
    save_checkpoint(path, tensors, sidecar)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from a checkpoint (config in the sidecar), in eval mode."""
    from advgeom.config import from_dict

    tensors, side = load_checkpoint(path)
    try:
        cfg = from_dict(TrainConfig, side["config"])
    except Exception as e:  # config errors -> checkpoint error naming the file
        raise CheckpointError(f"{path}: sidecar config is invalid ({e})") from None
    model = build_model(cfg)
    state = unflatten_state("model/", tensors, side.get("meta", {}))
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not match model {cfg.model!r} ({str(e)[:200]})") from None
    return model.to(device).eval()


def fit(cfg: TrainConfig, *, root: str | Path = "runs", device: str | torch.device = "cpu",
        progress: bool = True, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``cfg`` (or load it from the cache), resuming from the last checkpoint.

    ``on_step(step)`` is called after each completed step (tests use it to simulate kills).
    """
    device = torch.device(device)
    out = run_dir(cfg, root)
    final, last = out / "final.safetensors", out / "last.safetensors"
    if final.is_file():
        model = load_model(final, device)
        return TrainResult(model, final, cfg, load_checkpoint(final)[1].get("history", []), cached=True)

    batches = _Batches(cfg, device)
    total = batches.total_steps()
    model = build_model(cfg).to(device)
    objective = create("defense", cfg.objective, **cfg.objective_kwargs)
    opt = build_optimizer(cfg, model)
    start, history = 0, []
    if last.is_file():
        tensors, side = load_checkpoint(last)
        if side.get("hash") != config_hash(cfg):
            raise CheckpointError(f"{last}: belongs to another config (hash {side.get('hash')})")
        meta = side.get("meta", {})
        model.load_state_dict(unflatten_state("model/", tensors, meta))
        opt.load_state_dict(unflatten_state("optim/", tensors, meta))
        start, history = int(side["step"]), list(side.get("history", []))

    bar = progress_bar(total, f"train {cfg.model}", enabled=progress, initial=start, unit="step")
    model.train()
    t0, running, count = time.time(), 0.0, 0
    for step in range(start, total):
        lr = learning_rate(cfg, step, batches.per_epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batches.batch(step)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derive_seed("step", cfg.seed, step))
            g = torch.Generator(device=device).manual_seed(derive_seed("obj", cfg.seed, step))
            loss = objective(model, x, y, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        running, count = running + float(loss.detach()), count + 1
        done = step + 1
        bar.update(1)
        if done % cfg.checkpoint_every == 0 or done == total:
            history.append({"step": done, "loss": running / count, "lr": lr,
                            "seconds": round(time.time() - t0, 2)})
            running, count = 0.0, 0
            _save_state(last, model, opt, _sidecar(cfg, done, total, history, final=False))
        if on_step is not None:
            on_step(done)
    bar.close()
    model.eval()
    _save_state(final, model, None, _sidecar(cfg, total, total, history, final=True))
    return TrainResult(model, final, cfg, history, resumed_from=start)
