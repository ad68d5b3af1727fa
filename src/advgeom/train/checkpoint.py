"""Checkpoints: safetensors for tensors + a JSON sidecar (config, hash, versions, state).

Nothing is ever unpickled. A checkpoint is one atomic unit: the sidecar is embedded in
the safetensors header (``__metadata__``), and the file is written under a unique
temporary name and renamed into place, so a kill at any moment leaves either the old
or the new checkpoint, never newer weights beside an older step. The ``.json`` file
beside it is a readable copy written afterwards; when present it must agree with the
embedded record (an edited copy is an error, a missing one is not).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from advgeom.errors import CheckpointError


SIDECAR_KEY = "advgeom_sidecar"


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``; the temporary name is unique per call, so
    concurrent writers never share one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def flatten_state(prefix: str, state: dict[str, Any], tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> None:
    """Split a (nested) state dict into tensors (for safetensors) and JSON metadata."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            flatten_state(name + "/", value, tensors, meta)
        else:
            meta[name] = value


def unflatten_state(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """Inverse of :func:`flatten_state` for keys under ``prefix``."""
    out: dict[str, Any] = {}
    for source in (tensors, meta):
        for name, value in source.items():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            node = out
            for p in parts[:-1]:
                node = node.setdefault(int(p) if p.isdigit() else p, {})
            last = parts[-1]
            node[int(last) if last.isdigit() else last] = value
    return out


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors) and ``path`` with suffix .json, each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(sidecar, indent=1, sort_keys=True, default=str)
    _atomic_write(path, lambda p: save_file(tensors, str(p), metadata={SIDECAR_KEY: text}))
    _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(text))
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint and its sidecar; corrupted or missing files give CheckpointError."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            embedded = (f.metadata() or {}).get(SIDECAR_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupted checkpoint ({str(e).splitlines()[0]})") from None
    copy = None
    if side.is_file():
        try:
            copy = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{side}: corrupted checkpoint sidecar ({e})") from None
    if embedded is not None:
        sidecar = json.loads(embedded)
        if copy is not None and copy != sidecar:
            raise CheckpointError(f"{side}: sidecar and weights do not match (the .json copy differs "
                                  f"from the record inside {path.name}; edited?)")
    elif copy is not None:  # written before records were embedded
        sidecar = copy
    else:
        raise CheckpointError(f"checkpoint sidecar not found: {side}")
    if not isinstance(sidecar, dict) or "config" not in sidecar:
        raise CheckpointError(f"{side}: sidecar lacks a 'config' entry")
    return tensors, sidecar


def load_legacy_pt(path: str | Path) -> dict[str, torch.Tensor]:
    """Legacy ``.pt`` state dicts, loaded only with ``weights_only=True`` (never full unpickling)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot load as a weights-only .pt file ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj
