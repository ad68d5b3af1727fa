"""What a training run is built from: its model and optimizer, the
compatibility of model and data, the key and directory that cache it, and the capped
config of a smoke run (``--smoke``)."""
from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from advgeom.attacks.spec import SMOKE_CAPS, cap_spec_text
from advgeom.config import config_hash
from advgeom.errors import ConfigError
from advgeom.hashing import state_hash, text_hash
from advgeom.models import create_model
from advgeom.registry import get
from advgeom.seeding import derive_seed
from advgeom.train.config import TrainConfig

# ---------------------------------------------------------------------------
# model and optimizer


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


# ---------------------------------------------------------------------------
# the run's identity


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
# smoke runs

# What ``--smoke`` leaves of a training run (docs/design.md "Profiles and provenance"): one
# optimizer step on a batch of 2 (batch norm in training mode needs more than one sample),
# the monitor (when on) on a few held-out points, and every loop inside the objective
# (crafting steps, power iterations) at the attack caps.
SMOKE_STEPS = 1
SMOKE_BATCH = 2
SMOKE_MONITOR = 4
# Objective options that count iterations of an inner loop: crafting steps (TRADES,
# MART), power steps (data-dependent SNR, PGA-AT's iterations) and warm-up power steps.
LOOP_OPTIONS = ("steps", "iters", "init_iters")


def smoke_config(cfg: TrainConfig, *, steps: int = SMOKE_STEPS, batch_size: int = SMOKE_BATCH,
                 monitor_size: int = SMOKE_MONITOR, caps: Mapping[str, int] = SMOKE_CAPS) -> TrainConfig:
    """``cfg`` cut to a smoke run on the same data, model and objective: ``steps``
    iterations (in place of its iterations or epochs), batches of at most ``batch_size``,
    a checkpoint at the end, the monitor (if on) every step on at most ``monitor_size``
    held-out points (and as many training-curve points of each set) with its attack capped, and the objective's crafting attack and inner loops
    capped (:func:`cap_objective`). Its hash differs from ``cfg``'s, so it never shares a
    cache entry with the real run."""
    mon = cfg.monitor
    if mon.every > 0:
        mon = replace(mon, every=min(mon.every, steps), size=min(mon.size, monitor_size),
                      train_points=min(mon.train_points, monitor_size),
                      test_points=min(mon.test_points, monitor_size), attack=cap_spec_text(mon.attack, caps))
    return replace(cfg, iterations=steps, batch_size=min(cfg.batch_size, batch_size),
                   checkpoint_every=min(cfg.checkpoint_every, steps), monitor=mon,
                   objective_kwargs=cap_objective(cfg.objective, cfg.objective_kwargs,
                                                  steps=caps.get("steps", SMOKE_STEPS), caps=caps))


def cap_objective(name: str, kwargs: Mapping[str, Any], *, steps: int = SMOKE_STEPS,
                  caps: Mapping[str, int] = SMOKE_CAPS) -> dict[str, Any]:
    """The options of objective ``name`` with each inner loop (:data:`LOOP_OPTIONS`,
    its value or the objective's default) at most ``steps`` and its crafting ``attack``
    spec (given or default) capped by :func:`~advgeom.attacks.spec.cap_spec`; an
    objective wrapping another (``base`` / ``base_kwargs``, the D-SphereNet objective)
    has the inner one capped too."""
    params = inspect.signature(get("defense", name)).parameters
    out = dict(kwargs)

    def given(key: str) -> Any:
        return out.get(key, params[key].default)

    if "base" in params and "base_kwargs" in params:
        out["base_kwargs"] = cap_objective(given("base"), given("base_kwargs") or {}, steps=steps, caps=caps)
    for key in LOOP_OPTIONS:
        if key in params and isinstance(given(key), int) and not isinstance(given(key), bool) \
                and given(key) > steps:
            out[key] = steps
    if "attack" in params and isinstance(given("attack"), str) and given("attack"):
        out["attack"] = cap_spec_text(given("attack"), caps)
    return out
