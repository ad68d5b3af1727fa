"""Training: configs, the resumable loop, safetensors checkpoints."""
from advgeom.train.config import TrainConfig
from advgeom.train.loop import TrainResult, build_model, fit, load_model, run_dir

__all__ = ["TrainConfig", "TrainResult", "build_model", "fit", "load_model", "run_dir"]
