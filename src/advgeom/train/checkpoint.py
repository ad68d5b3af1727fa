"""Checkpoints: safetensors for tensors + a JSON sidecar (config, hash, versions, state).

Nothing is ever unpickled. Files are written to a temporary name and renamed, so a
kill during a save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from advgeom.errors import CheckpointError


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


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
    side = path.with_suffix(".json")
    _atomic_write(path, lambda p: save_file(tensors, str(p)))
    _atomic_write(side, lambda p: p.write_text(json.dumps(sidecar, indent=1, sort_keys=True, default=str)))
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint and its sidecar; corrupted or missing files give CheckpointError."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not side.is_file():
        raise CheckpointError(f"checkpoint sidecar not found: {side}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupted checkpoint ({str(e).splitlines()[0]})") from None
    try:
        sidecar = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{side}: corrupted checkpoint sidecar ({e})") from None
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
