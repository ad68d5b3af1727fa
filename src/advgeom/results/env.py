"""The environment recorded with every stored result: code version, torch, device."""
from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
from pathlib import Path

import torch


def git_sha(cwd: str | Path | None = None) -> str:
    """Short git sha of the source tree (``unknown`` outside a checkout), ``+dirty`` if modified."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


# Modules that only present results: editing them changes no number, so they are left
# out of the code fingerprint (a change anywhere else recomputes cached work).
PRESENTATION = ("cli.py", "progress.py", "results/render.py", "results/pivot.py",
                "results/site.py", "results/plots.py", "results/templates/")


# What a training run executes (the training cache is keyed by these alone, so editing
# an experiment or the evaluator does not retrain models).
TRAINING = ("train/", "defenses/", "models/", "data/", "nn/", "attacks/", "config.py",
            "registry.py", "seeding.py", "types.py", "logits.py", "errors.py")


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in patterns)


@functools.lru_cache(maxsize=None)
def code_fingerprint(root: str | None = None, include: tuple[str, ...] | None = None) -> str:
    """A short hash of advgeom's source (every ``.py`` file of the package except the
    :data:`PRESENTATION` ones, or only those matching ``include``, by path and content):
    the code version that keys cached work, so a code change recomputes instead of
    re-serving old numbers. Works outside a git checkout (an installed package) and
    sees uncommitted edits."""
    pkg = Path(root) if root else Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if _matches(rel, PRESENTATION) or (include is not None and not _matches(rel, include)):
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model (``model name`` of /proc/cpuinfo on Linux, else the platform's
    processor string, else ``cpu``): seeded CPU runs agree bit for bit only on the
    same kind of CPU, so results record it."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def environment(device: str | torch.device = "cpu") -> dict[str, str]:
    """A small dict describing where a result was produced."""
    from advgeom import __version__

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {
        "advgeom": __version__,
        "git_sha": git_sha(),
        "code": code_fingerprint(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": f"{dev.type}:{name}",
        "threads": str(torch.get_num_threads()),
        "world_size": str(_world_size()),
    }


def _world_size() -> int:
    """How many ranks produced a result (1 outside torchrun)."""
    from advgeom.distributed import world

    return world().size
