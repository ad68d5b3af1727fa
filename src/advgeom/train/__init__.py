"""Training: configs, the resumable loop, safetensors checkpoints.

``fit(TrainConfig(...))`` trains a registered model; ``fit(cfg, model=net)`` trains a
user's own ``nn.Module`` with any registered defense (cached and resumable, keyed by the
config and the module's architecture and initial weights); ``load_model(path)`` (or
``load_model(path, model=net)`` for a user's module) reads a checkpoint back."""
from advgeom.train.config import MonitorConfig, TrainConfig
from advgeom.train.build import build_model, run_dir, run_key, smoke_config
from advgeom.train.loop import TrainResult, fit
from advgeom.train.state import load_model

__all__ = ["MonitorConfig", "TrainConfig", "TrainResult", "build_model", "fit", "load_model",
           "run_dir", "run_key", "smoke_config"]
