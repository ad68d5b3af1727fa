"""The training loop: registered objectives, step schedules, cached and resumable runs.

Determinism without global state: model initialization and every step run inside
``torch.random.fork_rng`` seeded from ``(cfg.seed, step)``, data order comes from
per-epoch generators, so a run killed at any point and restarted from its last
checkpoint ends with exactly the weights of an uninterrupted run.

A user's own ``nn.Module`` trains the same way (``fit(cfg, model=net)``): the run is
keyed by the config and the module's fingerprint (class, ``repr`` and initial weights),
so it is cached and resumable like a registered model; ``load_model(path, model=net)``
reads its checkpoints back. What a run is built from is :mod:`advgeom.train.build`, its
batches :mod:`advgeom.train.batches`, what it keeps on disk :mod:`advgeom.train.state`,
how its steps execute (memory format, ``torch.compile``) :mod:`advgeom.train.execution`.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from advgeom.config import config_hash
from advgeom.defenses.base import StepContext, split_loss
from advgeom.distributed import (World, average_gradients, broadcast_module, broadcast_object, shard,
                                 sum_tensor, world)
from advgeom.errors import AdvgeomError, CheckpointError, ConfigError
from advgeom.nn.sphere import retract_to_stiefel
from advgeom.progress import progress_bar
from advgeom.registry import create
from advgeom.seeding import derive_seed
from advgeom.train.batches import Batches
from advgeom.train.build import (build_model, build_optimizer, check_compatible, module_fingerprint,
                                 run_dir, run_key)
from advgeom.train.checkpoint import load_checkpoint, remove_stale_temporaries, unflatten_state
from advgeom.train.config import TrainConfig
from advgeom.train.execution import (apply_memory_format, compile_mismatch, eager_reference,
                                     refuse_compiled, step_runner)
from advgeom.train.schedule import learning_rate
from advgeom.train.monitor import Monitor, best_monitored, overfitting_steps
from advgeom.train.state import (Meter, is_current, model_from, run_lock, save_state,
                                 make_sidecar)
from advgeom.types import check_device

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


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


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
        with run_lock(out) if w.main else nullcontext():
            if w.main:   # what saves killed before their rename left behind
                remove_stale_temporaries(out)
            hit = None
            if w.main and final.is_file():
                record = load_checkpoint(final)
                hit = record if is_current(final, record[1], reuse) else None
            hit = broadcast_object(hit)
            if hit is not None:
                tensors, side = hit
                trained = model_from(tensors, side, final, device, model)
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


def _call_objective(objective: Callable[..., Any], model: nn.Module, *, xs: torch.Tensor,
                    ys: torch.Tensor, cfg: TrainConfig, device: torch.device, seed: int,
                    extra: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """One step's objective on ``model`` (the module or its compiled form), its generator
    seeded from ``seed``: a second call on the same RNG state repeats the first."""
    g = torch.Generator(device=device).manual_seed(seed)
    with _autocast(cfg, device):
        return split_loss(objective(model, xs, ys, generator=g, **extra))


def _verify_compiled(reference: tuple[float, list], loss: torch.Tensor, model: nn.Module,
                     name: str, shape: tuple[int, ...], w: World, device: torch.device) -> None:
    """Stop (on every rank) when the compiled step differs from the eager ``reference``."""
    what = compile_mismatch(reference, loss, model)
    if w.distributed:
        bad = sum_tensor(torch.tensor([float(bool(what))], device=device))
        what = what or ("on another rank" if float(bad) > 0 else "")
    if what:
        raise refuse_compiled(what, name, shape)


def _drain(window: list[tuple[int, torch.Tensor, list[str]]], meter: Meter, name: str,
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
    final, last, best_path = out / "final.safetensors", out / "last.safetensors", out / "best.safetensors"
    say = log or (lambda msg: warnings.warn(msg, UserWarning, stacklevel=3))
    if not w.main:
        say = lambda msg: None  # noqa: E731 - rank 0 speaks for the run
    batches = Batches(cfg, device)
    total = batches.total_steps()
    if user_model is None:
        model, name, key = build_model(cfg).to(device), cfg.model, config_hash(cfg)
    else:
        model, name = copy.deepcopy(user_model).to(device), type(user_model).__name__
        key = custom["key"]
    model = apply_memory_format(cfg, model, device)
    check_compatible(cfg, model, batches.data, name)
    if cfg.stiefel and retract_to_stiefel(model) == 0:
        raise ConfigError(f"stiefel = true needs SphereCorr layers to constrain; model {name!r} has none")
    try:
        objective = create("defense", cfg.objective, **cfg.objective_kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, AdvgeomError):
            raise
        raise ConfigError(f"objective_kwargs of {cfg.objective!r}: {e}") from None
    with_context = _accepts(objective, "context")
    monitor = Monitor(cfg, *batches.held_out(), batches.curves()) if cfg.monitor.every > 0 and w.main else None
    opt = build_optimizer(cfg, model)
    start, history, events = 0, [], []
    resume = None
    if w.main and last.is_file():
        resume = load_checkpoint(last)
        if resume[1].get("hash") != key:
            raise CheckpointError(f"{last}: belongs to another config (hash {resume[1].get('hash')})")
        resume = resume if is_current(last, resume[1], reuse) else None
    resume = broadcast_object(resume)
    if resume is not None:
        tensors, side = resume
        meta = side.get("meta", {})
        model.load_state_dict(unflatten_state("model/", tensors, meta))
        opt.load_state_dict(unflatten_state("optim/", tensors, meta))
        start, history = int(side["step"]), list(side.get("history", []))
        events = list(side.get("events", []))
    broadcast_module(model)  # one set of weights everywhere (a user's module included)
    runner = step_runner(cfg, model)   # what the objective calls (compiled or the module)
    checked: set[tuple[int, ...]] = set()   # batch shapes whose compiled step matched eager

    bar = progress_bar(total, f"train {name}", enabled=progress and w.main, initial=start, unit="step")
    model.train()
    # "seconds" in the history is the training time so far, summed over resumed runs
    t0, meter, pending = time.time() - float(history[-1].get("seconds", 0.0) if history else 0.0), Meter(), {}
    window: list[tuple[int, torch.Tensor, list[str]]] = []
    monitoring = cfg.monitor.every > 0
    for step in range(start, total):
        lr = learning_rate(cfg, step, batches.per_epoch, total)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batches.batch(step)
        xs, ys = shard(x, w), shard(y, w)
        done = step + 1
        monitor_due = monitoring and (done % cfg.monitor.every == 0 or done == total)
        save_due = done % cfg.checkpoint_every == 0 or done == total or monitor_due
        ctx = StepContext(step, step // batches.per_epoch, total, batches.per_epoch)
        rank_part = ("rank", w.rank) if w.distributed else ()
        call = functools.partial(_call_objective, objective, xs=xs, ys=ys, cfg=cfg, device=device,
                                 seed=derive_seed("obj", cfg.seed, step, *rank_part),
                                 extra={"context": ctx} if with_context else {})
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derive_seed("step", cfg.seed, step, *rank_part))
            verify = cfg.compile and tuple(xs.shape) not in checked
            reference = eager_reference(model, call, device) if verify else None
            loss, terms = call(runner)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if reference is not None:
                _verify_compiled(reference, loss, model, name, tuple(xs.shape), w, device)
                checked.add(tuple(xs.shape))
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
            if cfg.stiefel:
                retract_to_stiefel(model)
        if w.distributed:
            broadcast_module(model, buffers_only=True)
        bar.update(1)
        if monitor_due:
            if monitor is not None:
                pending = monitor.measure(model, done)
                prev_best = best_monitored(history)[0]
                history_probe = history + [{"step": done, **pending}]
                if cfg.monitor.keep_best and pending.get("monitor_robust", -1.0) > prev_best:
                    save_state(best_path, model, None, make_sidecar(cfg, done, total, history_probe, False, custom))
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
                save_state(last, model, opt, make_sidecar(cfg, done, total, history, final=False,
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
        save_state(final, model, None, make_sidecar(cfg, total, total, history, final=True, custom=custom,
                                                 events=events, selected_step=selected))
    return TrainResult(model, final, cfg, history, resumed_from=start, events=events,
                       selected_step=selected)
