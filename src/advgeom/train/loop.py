"""The training loop: registered objectives, step schedules, cached and resumable runs.

Determinism without global state: model initialization and every step run inside
``torch.random.fork_rng`` seeded from ``(cfg.seed, step)``, data order comes from
per-epoch generators, so a run killed at any point and restarted from its last
checkpoint ends with exactly the weights of an uninterrupted run.

A user's own ``nn.Module`` trains the same way (``fit(cfg, model=net)``): the run is
keyed by the config and the module's fingerprint (class, ``repr`` and initial weights),
so it is cached and resumable like a registered model; ``load_model(path, model=net)``
reads its checkpoints back.
"""
from __future__ import annotations

import copy
import fcntl
import inspect
import math
import os
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from advgeom import __version__
from advgeom.config import config_hash, to_dict
from advgeom.data import load
from advgeom.distributed import (World, average_gradients, broadcast_module, broadcast_object, shard,
                                 sum_tensor, world)
from advgeom.eval.bookkeeping import state_hash, text_hash
from advgeom.errors import AdvgeomError, CheckpointError, ConfigError
from advgeom.models import create_model
from advgeom.progress import progress_bar
from advgeom.registry import create
from advgeom.train.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from advgeom.seeding import derive_seed
from advgeom.types import check_device
from advgeom.train.config import TrainConfig

# ---------------------------------------------------------------------------
# seeds and builders


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg``, initialized from ``cfg.seed`` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", cfg.seed))
        return create_model(cfg.model, **cfg.model_kwargs)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD over the trainable parameters; with weight decay, parameters of
    modules flagged ``no_weight_decay`` (SphereCorr layers) form a group without it."""
    params: Any = [p for p in model.parameters() if p.requires_grad]
    exempt = {id(p) for m in model.modules() if getattr(m, "no_weight_decay", False)
              for p in m.parameters(recurse=False)}
    if cfg.weight_decay and exempt:
        params = [{"params": [p for p in params if id(p) not in exempt]},
                  {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def check_compatible(cfg: TrainConfig, model: nn.Module, data: Any, name: str | None = None) -> None:
    """One clear error when the model cannot read the data set: another number of
    classes or another input shape (``name``: the model's name in the message)."""
    name = name or cfg.model
    classes, wanted = getattr(model, "num_classes", None), getattr(data, "num_classes", None)
    if classes and wanted and int(classes) != int(wanted):
        raise ConfigError(f"model {name!r} has {classes} classes but data set {cfg.dataset!r} "
                          f"has {wanted}: set model_kwargs.num_classes={wanted}")
    shape, images = tuple(getattr(model, "input_shape", ()) or ()), getattr(data, "images", None)
    if shape and images is not None and images.dim() > 1 and tuple(images.shape[1:]) != shape:
        raise ConfigError(f"model {name!r} takes inputs of shape {shape} but data set "
                          f"{cfg.dataset!r} has {tuple(images.shape[1:])}: set model_kwargs.input_shape "
                          f"(or input_dim)")


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Step schedule: ``lr * gamma ** (number of milestones passed)``."""
    t = step if cfg.schedule_unit == "iteration" else step // max(steps_per_epoch, 1)
    return cfg.lr * cfg.gamma ** sum(t >= m for m in cfg.milestones)


def architecture_hash(model: nn.Module) -> str:
    """Hash of a module's architecture: its class (module and qualified name) and ``repr``."""
    cls = type(model)
    return text_hash(f"{cls.__module__}.{cls.__qualname__}", repr(model), length=16)


def module_fingerprint(model: nn.Module) -> dict[str, str]:
    """What identifies a user's module in the run cache: its class, architecture hash
    and the hash of its initial weights (parameters and buffers)."""
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "architecture": architecture_hash(model),
            "weights": state_hash(model)}


def run_key(cfg: TrainConfig, model: nn.Module | None = None) -> str:
    """The cache key of a run: the config hash, folded with the fingerprint of a user's
    module when one is given (``fit(cfg, model=...)``)."""
    if model is None:
        return config_hash(cfg)
    fp = module_fingerprint(model)
    return text_hash(config_hash(cfg), fp["class"], fp["architecture"], fp["weights"], length=12)


def run_dir(cfg: TrainConfig, root: str | Path = "runs", model: nn.Module | None = None) -> Path:
    """Cache directory of a run: ``root/train/<model>-<hash>`` (``<model>`` is the class
    name of a user's module when one is given)."""
    name = cfg.model if model is None else type(model).__name__
    return Path(root) / "train" / f"{name}-{run_key(cfg, model)}"


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
        held = cfg.monitor.size if cfg.monitor.every > 0 else 0
        if held and not self.online:
            if held >= n:
                raise ConfigError(f"monitor.size={held} leaves no training data ({n} points)")
            n -= held  # the last ``held`` points are the monitor's, never trained on
        if cfg.train_size and not self.online:
            n = min(n, cfg.train_size)
        self.n = n
        self.held = held
        self.per_epoch = max(1, n // cfg.batch_size) if not self.online else 1
        self._perm: tuple[int, torch.Tensor] | None = None
        # on a GPU the whole split moves to the device once (no host-to-device copy per step)
        self.images = None if self.online else self.data.images
        self.labels = None if self.online else self.data.labels
        if device.type == "cuda" and not self.online:
            self.images, self.labels = self.images.to(device), self.labels.to(device)

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The monitor's fixed points: the end of the split (or a seeded online draw)."""
        if self.online:
            g = torch.Generator().manual_seed(derive_seed("monitor-data", self.cfg.seed))
            x, y = self.data.sample_batch(self.held, g)
        else:
            x, y = self.images[-self.held:], self.labels[-self.held:]
        return x.to(self.device), y.to(self.device)

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
            if self._perm is None or self._perm[0] != epoch:   # one permutation per epoch
                g = torch.Generator().manual_seed(derive_seed("perm", cfg.seed, epoch))
                self._perm = (epoch, torch.randperm(self.n, generator=g))
            idx = self._perm[1][k * cfg.batch_size:(k + 1) * cfg.batch_size].to(self.images.device)
            x, y = self.images[idx], self.labels[idx]
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
    events: list[dict[str, Any]] = field(default_factory=list)
    selected_step: int = 0


def _sidecar(cfg: TrainConfig, step: int, total: int, history: list, final: bool,
             custom: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """The checkpoint record; ``custom`` is the fingerprint of a user's module, whose
    run key replaces the config hash."""
    key = config_hash(cfg) if custom is None else custom["key"]
    more = {} if custom is None else {"custom_model": custom}
    return {"config": to_dict(cfg), "hash": key, "step": step, "total_steps": total,
            "final": final, "history": history, "advgeom": __version__, "torch": torch.__version__,
            "code": training_code(), "world_size": world().size, **more, **extra}


def training_code() -> str:
    """The code version of training (a fingerprint of the modules a run executes)."""
    from advgeom.results.env import TRAINING, code_fingerprint

    return code_fingerprint(include=TRAINING)


def _current(path: Path, side: dict[str, Any], reuse: bool) -> bool:
    """Whether a checkpoint may be used: written by this code version (or ``reuse``).
    One of another version is set aside under ``<name>.code-<version>.safetensors``
    (never deleted) and the work is redone."""
    code = side.get("code", "unknown")
    if reuse or code == training_code():
        return True
    for src in (path, path.with_suffix(".json")):
        if src.exists():
            os.replace(src, src.with_name(f"{path.stem}.code-{code}{src.suffix}"))
    return False


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None, sidecar: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    flatten_state("model/", model.state_dict(), tensors, meta)
    if opt is not None:
        flatten_state("optim/", opt.state_dict(), tensors, meta)
    sidecar = dict(sidecar, meta=meta)
    save_checkpoint(path, tensors, sidecar)


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               model: nn.Module | None = None) -> nn.Module:
    """Rebuild a trained model from a checkpoint (config in the sidecar), in eval mode.

    A checkpoint of a user's own module (``fit(cfg, model=net)``) needs ``model``: a
    module of the same architecture (same class and ``repr``); its weights are loaded
    into a copy, ``model`` itself is left unchanged."""
    tensors, side = load_checkpoint(path)
    return _model_from(tensors, side, path, device, model)


def _model_from(tensors: dict[str, torch.Tensor], side: dict[str, Any], path: str | Path,
                device: str | torch.device, model: nn.Module | None) -> nn.Module:
    """The model a checkpoint's ``tensors`` and sidecar describe (see :func:`load_model`)."""
    from advgeom.config import from_dict

    try:
        cfg = from_dict(TrainConfig, side["config"])
    except Exception as e:  # config errors -> checkpoint error naming the file
        raise CheckpointError(f"{path}: sidecar config is invalid ({e})") from None
    custom = side.get("custom_model")
    if custom is not None and model is None:
        raise CheckpointError(f"{path}: trained from a user module ({custom.get('class')}); pass a "
                              f"module of that architecture: load_model(path, model=net)")
    if model is not None:
        if custom is not None and custom.get("architecture") != architecture_hash(model):
            raise CheckpointError(f"{path}: trained from another architecture ({custom.get('class')}) "
                                  f"than the {type(model).__qualname__} given")
        model, name = copy.deepcopy(model), type(model).__qualname__
    else:
        model, name = build_model(cfg), cfg.model
    state = unflatten_state("model/", tensors, side.get("meta", {}))
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not match model {name!r} ({str(e)[:200]})") from None
    return model.to(device).eval()


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class _Meter:
    """Running means of the loss and the objective's named terms between records."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, loss: float, terms: dict[str, torch.Tensor]) -> None:
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def flush(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


@contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """One process at a time per run directory: a second ``fit`` of the same config
    waits, then finds the finished run in the cache."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fit(cfg: TrainConfig, *, model: nn.Module | None = None, root: str | Path = "runs",
        device: str | torch.device = "cpu", progress: bool = True,
        on_step: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None, reuse: bool = False) -> TrainResult:
    """Train ``cfg`` (or load it from the cache), resuming from the last checkpoint.

    The cache and the resume point are keyed by the code version as well
    (:func:`training_code`): a checkpoint written by other training code is set aside and
    the run redone, unless ``reuse`` accepts it.

    ``model``: a user's own ``nn.Module`` (inputs in [0,1], logits out) to train instead
    of the registered ``cfg.model``. It is trained as a copy (``model`` keeps its initial
    weights; the trained module is ``result.model``), and the run is cached and resumed
    under ``run_dir(cfg, root, model)``: the config hash folded with the module's class,
    ``repr`` and initial weights (seed the module's initialization, e.g. with
    ``torch.manual_seed``, so that a rerun finds the cache).

    The objective gets each step's :class:`~advgeom.defenses.base.StepContext`; the
    history records the loss, the objective's named terms and, when the monitor is on,
    its clean/robust accuracies. ``on_step(step)`` is called after each completed step
    (tests use it to simulate kills); ``log`` receives warnings such as catastrophic
    overfitting (default: ``warnings.warn``).

    Under torchrun (an initialized process group, :mod:`advgeom.distributed`) every rank
    calls ``fit`` with the same arguments: each trains on its shard of every global
    batch with gradients averaged across ranks; rank 0 alone reads and writes the run
    directory, and every rank returns the same weights.
    """
    device = check_device(device)
    if model is not None and not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    w = world()
    custom = None if model is None else {"key": run_key(cfg, model), **module_fingerprint(model)}
    out = run_dir(cfg, root, model)  # read and written by rank 0 alone
    final = out / "final.safetensors"
    try:
        with _run_lock(out) if w.main else nullcontext():
            hit = None
            if w.main and final.is_file():
                record = load_checkpoint(final)
                hit = record if _current(final, record[1], reuse) else None
            hit = broadcast_object(hit)
            if hit is not None:
                tensors, side = hit
                trained = _model_from(tensors, side, final, device, model)
                return TrainResult(trained, final, cfg, side.get("history", []), cached=True,
                                   events=list(side.get("events", [])),
                                   selected_step=int(side.get("selected_step", side.get("step", 0))))
            return _train(cfg, out, device, progress, on_step, log, model, custom, reuse, w)
    except OSError as e:
        raise AdvgeomError(f"cannot write the run directory {out}: {e.strerror or e}") from None


# Steps between reading the loss back on a GPU (each read is a host synchronization);
# on a CPU it is read every step, before the optimizer step it would poison.
GPU_SYNC_EVERY = 25


def _autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast for ``precision="bf16"`` (CPU or CUDA), else nothing."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _drain(window: list[tuple[int, torch.Tensor, list[str]]], meter: _Meter, name: str,
           cfg: TrainConfig, lr: float) -> None:
    """Read the pending step losses back (one synchronization) into ``meter``; a
    non-finite one stops the run before anything of it is saved."""
    if not window:
        return
    values = torch.stack([v for _, v, _ in window]).double().cpu().tolist()
    for (step, _, keys), vals in zip(window, values):
        if not math.isfinite(vals[0]):
            raise AdvgeomError(f"training {name} with {cfg.objective}: the loss is {vals[0]} "
                               f"at step {step + 1} (lr {lr:g}); nothing of this step was "
                               f"saved: lower lr or check the data")
        meter.add(vals[0], dict(zip(keys, vals[1:])))
    window.clear()


def _train(cfg: TrainConfig, out: Path, device: torch.device, progress: bool,
           on_step: Callable[[int], None] | None, log: Callable[[str], None] | None,
           user_model: nn.Module | None = None, custom: dict[str, str] | None = None,
           reuse: bool = False, w: World = World()) -> TrainResult:
    from advgeom.defenses.base import StepContext, split_loss
    from advgeom.train.monitor import Monitor, best_monitored, overfitting_steps

    final, last, best_path = out / "final.safetensors", out / "last.safetensors", out / "best.safetensors"
    say = log or (lambda msg: warnings.warn(msg, UserWarning, stacklevel=3))
    if not w.main:
        say = lambda msg: None  # noqa: E731 - rank 0 speaks for the run
    batches = _Batches(cfg, device)
    total = batches.total_steps()
    if user_model is None:
        model, name, key = build_model(cfg).to(device), cfg.model, config_hash(cfg)
    else:
        model, name = copy.deepcopy(user_model).to(device), type(user_model).__name__
        key = custom["key"]
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    check_compatible(cfg, model, batches.data, name)
    try:
        objective = create("defense", cfg.objective, **cfg.objective_kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, AdvgeomError):
            raise
        raise ConfigError(f"objective_kwargs of {cfg.objective!r}: {e}") from None
    with_context = _accepts(objective, "context")
    monitor = Monitor(cfg, *batches.held_out()) if cfg.monitor.every > 0 and w.main else None
    opt = build_optimizer(cfg, model)
    start, history, events = 0, [], []
    resume = None
    if w.main and last.is_file():
        resume = load_checkpoint(last)
        if resume[1].get("hash") != key:
            raise CheckpointError(f"{last}: belongs to another config (hash {resume[1].get('hash')})")
        resume = resume if _current(last, resume[1], reuse) else None
    resume = broadcast_object(resume)
    if resume is not None:
        tensors, side = resume
        meta = side.get("meta", {})
        model.load_state_dict(unflatten_state("model/", tensors, meta))
        opt.load_state_dict(unflatten_state("optim/", tensors, meta))
        start, history = int(side["step"]), list(side.get("history", []))
        events = list(side.get("events", []))
    broadcast_module(model)  # one set of weights everywhere (a user's module included)

    bar = progress_bar(total, f"train {name}", enabled=progress and w.main, initial=start, unit="step")
    model.train()
    t0, meter, pending = time.time(), _Meter(), {}
    window: list[tuple[int, torch.Tensor, list[str]]] = []
    monitoring = cfg.monitor.every > 0
    for step in range(start, total):
        lr = learning_rate(cfg, step, batches.per_epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batches.batch(step)
        xs, ys = shard(x, w), shard(y, w)
        done = step + 1
        monitor_due = monitoring and (done % cfg.monitor.every == 0 or done == total)
        save_due = done % cfg.checkpoint_every == 0 or done == total or monitor_due
        ctx = StepContext(step, step // batches.per_epoch, total, batches.per_epoch)
        rank_part = ("rank", w.rank) if w.distributed else ()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derive_seed("step", cfg.seed, step, *rank_part))
            g = torch.Generator(device=device).manual_seed(derive_seed("obj", cfg.seed, step, *rank_part))
            extra = {"context": ctx} if with_context else {}
            with _autocast(cfg, device):
                loss, terms = split_loss(objective(model, xs, ys, generator=g, **extra))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            share = len(ys) / len(y)
            scalars = torch.stack([loss.detach().float().reshape(()),
                                   *[torch.as_tensor(v, device=loss.device).detach().float().reshape(())
                                     for v in terms.values()]])
            if w.distributed:
                average_gradients(model, share)
                scalars = sum_tensor(scalars * share)
            window.append((step, scalars, list(terms)))
            if device.type != "cuda" or done % GPU_SYNC_EVERY == 0 or save_due:
                _drain(window, meter, name, cfg, lr)
            opt.step()
        if w.distributed:
            broadcast_module(model, buffers_only=True)
        bar.update(1)
        if monitor_due:
            if monitor is not None:
                pending = monitor.measure(model, done)
                prev_best = best_monitored(history)[0]
                history_probe = history + [{"step": done, **pending}]
                if cfg.monitor.keep_best and pending["monitor_robust"] > prev_best:
                    _save_state(best_path, model, None, _sidecar(cfg, done, total, history_probe, False, custom))
                if done in overfitting_steps(history_probe, cfg.monitor.overfit_drop) and not events:
                    events.append({"step": done, "event": "catastrophic_overfitting",
                                   "best_robust": prev_best, "robust": pending["monitor_robust"]})
                    say(f"catastrophic overfitting at step {done}: monitored robust accuracy "
                        f"{pending['monitor_robust']:.1%} after a best of {prev_best:.1%} "
                        f"({cfg.objective}); keep_best={cfg.monitor.keep_best}")
            pending, events = broadcast_object((pending, events))
        if save_due:
            history.append({"step": done, **meter.flush(), **pending, "lr": lr,
                            "seconds": round(time.time() - t0, 2)})
            pending = {}
            if w.main:
                _save_state(last, model, opt, _sidecar(cfg, done, total, history, final=False,
                                                       custom=custom, events=events))
        if on_step is not None:
            on_step(done)
    bar.close()
    selected = total
    if w.main and monitoring and cfg.monitor.keep_best and best_path.is_file():
        tensors, side = load_checkpoint(best_path)
        model.load_state_dict(unflatten_state("model/", tensors, side.get("meta", {})))
        selected = int(side["step"])
    selected = broadcast_object(selected)
    broadcast_module(model)
    model.eval()
    if w.main:
        _save_state(final, model, None, _sidecar(cfg, total, total, history, final=True, custom=custom,
                                                 events=events, selected_step=selected))
    return TrainResult(model, final, cfg, history, resumed_from=start, events=events,
                       selected_step=selected)
