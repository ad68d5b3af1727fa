"""The state a training run keeps on disk: its checkpoints' records (config, step,
history, code version), saving and loading weights and optimizer state, the history's
running means, and the lock that gives a run directory to one process at a time.
The file format itself is :mod:`advgeom.train.checkpoint`."""
from __future__ import annotations

import copy
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from advgeom import __version__
from advgeom.config import config_hash, from_dict, to_dict
from advgeom.distributed import world
from advgeom.errors import CheckpointError, one_line
from advgeom.results.env import TRAINING, code_fingerprint
from advgeom.train.build import architecture_hash, build_model
from advgeom.train.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from advgeom.train.config import TrainConfig
from advgeom.types import check_device

# ---------------------------------------------------------------------------
# records and checkpoints


def make_sidecar(cfg: TrainConfig, step: int, total: int, history: list, final: bool,
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
    return code_fingerprint(include=TRAINING)


def is_current(path: Path, side: dict[str, Any], reuse: bool) -> bool:
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


def save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None, sidecar: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    flatten_state("model/", model.state_dict(), tensors, meta)
    if opt is not None:
        flatten_state("optim/", opt.state_dict(), tensors, meta)
    sidecar = dict(sidecar, meta=meta)
    save_checkpoint(path, tensors, sidecar)


# suffixes of plain torch state-dict files (a RobustBench model-zoo checkpoint)
ZOO_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               model: nn.Module | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, zoo_entry: str | None = None) -> nn.Module:
    """Rebuild a trained model from a checkpoint (config in the sidecar), in eval mode.

    A checkpoint of a user's own module (``fit(cfg, model=net)``) needs ``model``: a
    module of the same architecture (same class and ``repr``); its weights are loaded
    into a copy, ``model`` itself is left unchanged.

    A ``.pt``/``.pth``/``.ckpt``/``.bin`` file is read as a RobustBench model-zoo
    checkpoint of a WideResNet or a PreAct ResNet, or as Wong et al.'s released MNIST
    network (``fast_at_mnist_net``, no normalization) (a state dict, possibly under
    ``"state_dict"`` or with ``module.`` prefixes; read with ``weights_only=True``) into
    advgeom's ``wrn`` or ``preact_resnet`` (:mod:`advgeom.models.zoo`): ``mean``/``std``
    put the entry's normalization inside the model (default: the file's ``mu``/``sigma``
    buffers, else that of the known entry named by ``zoo_entry``, e.g.
    ``"Wong2020Fast"``, whose architecture the file must hold; else none)."""
    if not isinstance(path, (str, Path)):
        raise CheckpointError(f"load_model needs a checkpoint path, got {type(path).__name__}")
    device = check_device(device)
    if Path(path).suffix.lower() in ZOO_SUFFIXES:
        from advgeom.models.zoo import from_released, state_dict_of

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file") from None
        except Exception as e:  # pickle/zip errors of a corrupt or foreign file
            raise CheckpointError(f"{path}: not a readable torch state-dict file ({type(e).__name__})") from None
        net = from_released(state_dict_of(obj, str(path)), mean=mean, std=std, entry=zoo_entry,
                               where=str(path))
        return net.to(device).eval()
    if mean is not None or std is not None or zoo_entry is not None:
        raise CheckpointError(f"{path}: mean/std/zoo_entry apply to model-zoo files ({', '.join(ZOO_SUFFIXES)}); "
                              "an advgeom checkpoint carries its own normalization")
    tensors, side = load_checkpoint(path)
    return model_from(tensors, side, path, device, model)


def model_from(tensors: dict[str, torch.Tensor], side: dict[str, Any], path: str | Path,
                device: str | torch.device, model: nn.Module | None) -> nn.Module:
    """The model a checkpoint's ``tensors`` and sidecar describe (see :func:`load_model`)."""
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
        raise CheckpointError(f"{path}: weights do not match model {name!r} ({one_line(e)[:200]})") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------
# history and lock


class Meter:
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
def run_lock(out: Path) -> Iterator[None]:
    """One process at a time per run directory: a second ``fit`` of the same config
    waits, then finds the finished run in the cache."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
