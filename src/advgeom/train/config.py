"""The training configuration: a frozen dataclass loaded from TOML (``advgeom train``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advgeom.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash keys the run cache.

    Train for ``iterations`` steps when > 0, else for ``epochs`` passes. ``milestones``
    divide the learning rate by ``1/gamma`` at those iterations (or epochs, per
    ``schedule_unit``). ``train_size`` > 0 uses the first that many training samples.
    """

    dataset: str = "mnist"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str = "hyper_mnist_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    objective: str = "ce"
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    iterations: int = 0
    epochs: int = 1
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    schedule_unit: str = "iteration"
    seed: int = 0
    checkpoint_every: int = 200
    train_size: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule_unit not in ("iteration", "epoch"):
            raise ConfigError(f"schedule_unit must be 'iteration' or 'epoch', got {self.schedule_unit!r}")
        for name in ("batch_size", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("iterations", "epochs", "train_size", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.iterations == 0 and self.epochs == 0:
            raise ConfigError("set iterations > 0 or epochs > 0")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"milestones must be increasing, got {self.milestones}")
