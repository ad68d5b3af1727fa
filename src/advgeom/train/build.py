"""What a training run is built from: its model and optimizer, the
compatibility of model and data, and the key and directory that cache it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from advgeom.config import config_hash
from advgeom.errors import ConfigError
from advgeom.hashing import state_hash, text_hash
from advgeom.models import create_model
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
