"""Checkpoints: safetensors for tensors + a JSON sidecar (config, hash, versions, state).

Nothing is ever unpickled. A checkpoint is one atomic unit: the sidecar record is
embedded in the safetensors header (``__metadata__``), and the file is written under a
unique temporary name (``.NAME.PID.HEX.tmp``) and renamed into place, so a kill at any
moment leaves either the old or the new checkpoint, never newer weights beside an older
step. The embedded record is the truth; the ``.json`` file beside it is a readable copy
written by a second rename, and :func:`load_checkpoint` judges it by one rule: could a
save of this path have left it there?

- missing (a kill before the second rename): rewritten from the embedded record;
- a record of the same run (equal ``config``, ``hash`` and ``custom_model``) that differs
  in what a save advances or stamps (step, history, state, events, versions; a kill
  between the renames leaves the previous save's copy): rewritten from the embedded
  record, silently;
- anything else (not JSON, not an object, another run's identity): no save writes that,
  so it was edited: CheckpointError, one line naming the way out (delete the copy and
  it is restored from the weights file). An edit is never overwritten silently.

Rewriting is atomic; where the directory is not writable the copy is left as it is
(with a warning) and the embedded record is used. A checkpoint without an embedded
record (written before records were embedded) takes its record from the copy.

A save killed before its rename leaves its temporary behind: every load and save
removes, in its directory, the temporaries whose writer process no longer runs on this
machine and that nobody wrote for a moment (:func:`remove_stale_temporaries`); a live
writer's temporary is never touched.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from advgeom.errors import CheckpointError


SIDECAR_KEY = "advgeom_sidecar"
# what identifies the run a record belongs to; a save never changes these at one path
IDENTITY = ("hash", "config", "custom_model")
# the temporaries of _atomic_write: .NAME.PID.HEX.tmp, NAME a checkpoint or its copy
_TEMPORARY = re.compile(r"^\.(?P<name>.+\.(?:safetensors|json))\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename over ``path``; the temporary name is unique per call, so
    concurrent writers never share one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one we may not signal counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def remove_stale_temporaries(directory: str | Path, *, idle: float = 2.0) -> list[Path]:
    """Delete the temporaries (``.NAME.PID.HEX.tmp``) that saves killed before their
    rename left in ``directory``: those whose writer ``PID`` no longer runs on this
    machine and that were not written for ``idle`` seconds (a writer in another pid
    namespace sharing the directory is still writing its file). Returns the removed paths."""
    try:
        entries = list(Path(directory).iterdir())
    except OSError:  # missing or unreadable: nothing to clean
        return []
    removed, now = [], time.time()
    for entry in entries:
        found = _TEMPORARY.match(entry.name)
        if found is None or _alive(int(found["pid"])):
            continue
        try:
            if now - entry.stat().st_mtime >= idle:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone already, or a read-only directory: leave it
            continue
    return removed


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
    """Write ``path`` (.safetensors, the record embedded) and then its ``.json`` copy, each
    atomically; first the temporaries of killed saves in the directory are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    text = json.dumps(sidecar, indent=1, sort_keys=True, default=str)
    _atomic_write(path, lambda p: save_file(tensors, str(p), metadata={SIDECAR_KEY: text}))
    _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(text))
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint and its record (the embedded one; see the module docstring for the
    ``.json`` copy); corrupted, missing or edited files give CheckpointError."""
    path = Path(path)
    remove_stale_temporaries(path.parent)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    tensors, embedded = _read_weights(path)
    if embedded is None:  # written before records were embedded: the copy is the record
        sidecar = _legacy_record(path)
    else:
        sidecar = _parse_embedded(path, embedded)
        _reconcile_copy(path, sidecar, embedded)
    if "config" not in sidecar:
        raise CheckpointError(f"{path.with_suffix('.json')}: sidecar lacks a 'config' entry")
    return tensors, sidecar


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors and the embedded record's text, read through one handle (so both come
    from one file even when a save renames a new one into place meanwhile)."""
    try:
        with safe_open(str(path), "pt") as f:
            embedded = (f.metadata() or {}).get(SIDECAR_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupted checkpoint ({str(e).splitlines()[0]})") from None
    return tensors, embedded


def _parse_embedded(path: Path, text: str) -> dict[str, Any]:
    """The embedded record; one that is not a JSON object is a corrupted checkpoint."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupted checkpoint (its embedded record is not JSON: "
                              f"{e})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: corrupted checkpoint (its embedded record is not a JSON "
                              f"object)")
    return record


def _legacy_record(path: Path) -> dict[str, Any]:
    """The record of a checkpoint without an embedded one: its ``.json`` file."""
    side = path.with_suffix(".json")
    if not side.is_file():
        raise CheckpointError(f"checkpoint sidecar not found: {side}")
    try:
        record = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{side}: corrupted checkpoint sidecar ({e}); {path.name} holds no "
                              f"record to restore it from") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{side}: corrupted checkpoint sidecar (not a JSON object)")
    return record


_MISSING = object()


def _difference(a: Any, b: Any, where: str) -> str | None:
    """The dotted path of the first difference between two JSON values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = _difference(a.get(key, _MISSING), b.get(key, _MISSING), f"{where}.{key}")
            if found is not None:
                return found
        return None
    return None if a == b else where


def _copy_edit(copy: dict[str, Any], record: dict[str, Any]) -> str | None:
    """Where the ``.json`` copy differs from the embedded record in a way no save of this
    path could produce (e.g. ``config.lr``), or None when a save could have left it."""
    for key in IDENTITY:
        where = _difference(copy.get(key, _MISSING), record.get(key, _MISSING), key)
        if where is not None:
            return where
    return None


def _reconcile_copy(path: Path, record: dict[str, Any], text: str) -> None:
    """Check the ``.json`` copy against the embedded record (``text``): rewrite a missing
    or stale copy, refuse an edited one (see the module docstring)."""
    side = path.with_suffix(".json")
    way_out = f"delete {side.name} to restore it from the weights file"
    if side.is_file():
        try:
            copy = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            copy = None
        if not isinstance(copy, dict):
            raise CheckpointError(f"{side}: the sidecar is not a JSON object (edited?); {way_out}")
        if copy == record:
            return
        edit = _copy_edit(copy, record)
        if edit is not None:
            raise CheckpointError(f"{side}: edited sidecar ({edit} differs from the record inside "
                                  f"{path.name}); {way_out}")
    try:
        _atomic_write(side, lambda p: p.write_text(text))
    except OSError as e:
        warnings.warn(f"{side}: stale sidecar copy left as it is ({e.strerror or e}); the record "
                      f"inside {path.name} is used", UserWarning, stacklevel=3)


def load_legacy_pt(path: str | Path) -> dict[str, torch.Tensor]:
    """Legacy ``.pt`` state dicts, loaded only with ``weights_only=True`` (never full unpickling)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot load as a weights-only .pt file ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj
