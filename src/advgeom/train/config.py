"""The training configuration: a frozen dataclass loaded from TOML (``advgeom train``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from advgeom.errors import ConfigError
from advgeom.train.schedule import check_schedule


def _check_scalar_types(cfg: Any) -> None:
    """Every ``int``, ``float`` and ``str`` field of a config holds that type (an int is a
    float too; a bool is neither): ``batch_size=2.5`` or ``lr="0.1"`` from Python is one
    clear error here, not a TypeError inside training."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        tp, v = hints.get(f.name), getattr(cfg, f.name)
        ok = {int: lambda: isinstance(v, int) and not isinstance(v, bool),
              float: lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda: isinstance(v, str)}.get(tp, lambda: True)()
        if not ok:
            what = {int: "an integer", float: "a number", str: "a string"}[tp]
            raise ConfigError(f"{f.name} must be {what}, got {v!r}")


@dataclass(frozen=True)
class MonitorConfig:
    """The robust-accuracy monitor (Wong et al. 2020's guard against catastrophic
    overfitting). Every ``every`` steps (0: off) ``attack`` runs on ``size`` held-out
    training points (the last ``size`` of the training split, then left out of
    training) at ``eps``/``norm`` (0 / "": the objective's ``eps``/``norm``); the
    clean and robust accuracies go to the history. A robust accuracy ``overfit_drop``
    below the best so far flags catastrophic overfitting; ``keep_best`` makes the
    final weights those of the best robust accuracy (early stopping).

    Training curves (weight-penalization-classification-layer.txt, Figures 4 and 7):
    ``train_points`` > 0 attacks the first that many training points (trained on) as
    well, ``test_points`` > 0 the first that many test points, recorded as
    ``monitor_train_clean``/``monitor_train_robust`` and ``monitor_test_*``. With
    either on, ``size`` may be 0 (no point held out; no overfitting rule, no
    ``keep_best``). Both are left out of the config hash while 0."""

    HASH_OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("train_points", "test_points")

    every: int = 0
    size: int = 256
    attack: str = "pgd:steps=10"
    eps: float = 0.0
    norm: str = ""
    keep_best: bool = False
    overfit_drop: float = 0.2
    train_points: int = 0
    test_points: int = 0

    def __post_init__(self) -> None:
        _check_scalar_types(self)
        if self.train_points < 0 or self.test_points < 0:
            raise ConfigError(f"monitor.train_points and monitor.test_points must be >= 0, "
                              f"got {self.train_points} and {self.test_points}")
        curves = self.train_points > 0 or self.test_points > 0
        if self.every < 0 or self.size < (0 if curves else 1):
            raise ConfigError(f"monitor.every must be >= 0 and monitor.size >= 1 (>= 0 with train_points or "
                              f"test_points), got {self.every} and {self.size}")
        if self.keep_best and self.size == 0:
            raise ConfigError("monitor.keep_best needs held-out points: set monitor.size >= 1")
        if not self.eps >= 0.0 or self.eps == float("inf"):
            raise ConfigError(f"monitor.eps must be finite and >= 0, got {self.eps}")
        if self.norm not in ("", "linf", "l2"):
            raise ConfigError(f"monitor.norm must be 'linf' or 'l2', got {self.norm!r}")
        if not 0.0 < self.overfit_drop <= 1.0:
            raise ConfigError(f"monitor.overfit_drop must be in (0, 1], got {self.overfit_drop}")


# The training settings that one optimizer or schedule alone reads (train/build.py,
# train/schedule.py), as {setting: (TrainConfig field, the value of it that reads the
# setting)}: given with another, a setting would change the config hash and nothing else
# (the CLI refuses it).
READ_ONLY_BY: dict[str, tuple[str, str]] = {
    "momentum": ("optimizer", "sgd"), "milestones": ("schedule", "step"),
    "gamma": ("schedule", "step"), "schedule_unit": ("schedule", "step"),
    "lr_knots": ("schedule", "piecewise"), "lr_factors": ("schedule", "piecewise"),
    "onecycle_pct": ("schedule", "onecycle"), "onecycle_div": ("schedule", "onecycle"),
    "onecycle_final_div": ("schedule", "onecycle")}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash keys the run cache.

    Train for ``iterations`` steps when > 0, else for ``epochs`` passes. ``schedule``
    (:mod:`advgeom.train.schedule`): ``step``, where ``milestones`` divide the learning
    rate by ``1/gamma`` at those iterations (or epochs, per ``schedule_unit``);
    ``piecewise`` (linear through ``lr_knots`` / ``lr_factors``, Wong et al. 2020) or
    ``onecycle`` (``onecycle_pct``, ``onecycle_div``, ``onecycle_final_div``; Smith &
    Topin 2019). ``train_size`` > 0 uses the first that many training samples.
    ``objective`` names a registered defense built with ``objective_kwargs``;
    ``monitor`` configures the robust-accuracy monitor (:class:`MonitorConfig`).
    ``precision`` "bf16" runs each step's forward passes (crafting included) under bf16
    autocast (parameters, gradients and the optimizer stay float32); "fp32" does not.

    Execution options (:mod:`advgeom.train.execution`; the same loss and weights as
    the plain path within float tolerance, off by default, measured by
    ``benchmarks/train_speed.py``): ``channels_last`` stores the model's 4-D weights in
    channels-last memory format on a CPU too (a CUDA run always does); ``compile`` runs
    every step's forward passes (crafting included) through ``torch.compile`` (inductor)
    and checks the first step of each batch shape against the eager step, refusing to
    train on a mismatch. While off they are left out of the config hash, so the runs
    cached before they existed keep their keys.

    ``stiefel`` keeps the weights of every SphereCorr layer on the Stiefel manifold
    (hyperspherical-defense.txt, footnote 4, as a hard constraint): a QR retraction
    (:func:`advgeom.nn.sphere.retract_to_stiefel`) at the start and after every
    optimizer step. Left out of the hash while off, like the execution options.
    """

    HASH_OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("channels_last", "compile", "stiefel")

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
    schedule: str = "step"
    lr_knots: tuple[float, ...] = ()
    lr_factors: tuple[float, ...] = ()
    onecycle_pct: float = 0.3
    onecycle_div: float = 25.0
    onecycle_final_div: float = 1e4
    seed: int = 0
    checkpoint_every: int = 200
    train_size: int = 0
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    stiefel: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.monitor, dict):  # TrainConfig(monitor={"every": 100}) from Python
            from advgeom.config import from_dict

            object.__setattr__(self, "monitor", from_dict(MonitorConfig, self.monitor, "monitor."))
        if not isinstance(self.monitor, MonitorConfig):
            raise ConfigError(f"monitor must be a table of monitor settings, got {self.monitor!r}")
        _check_scalar_types(self)
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("channels_last", "compile", "stiefel"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
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
        if not self.lr > 0 or self.lr == float("inf"):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        # torch.optim raises deep inside the first step (or trains on NaN) for these
        if not 0.0 <= self.weight_decay < float("inf"):
            raise ConfigError(f"weight_decay must be finite and >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"milestones must be increasing, got {self.milestones}")
        check_schedule(self)
