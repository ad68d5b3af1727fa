"""Scale-out with ``torchrun`` and ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

advgeom never launches processes itself: ``torchrun --nproc_per_node=N -m advgeom ...``
starts the ranks and sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``;
:func:`init_from_env` joins the process group. Without torchrun (or with one process)
every function here is a no-op and the code paths are the single-process ones.

Contract (tested in tests/test_distributed.py):

- Training: every rank draws the same global batch as a single-process run and takes
  its contiguous shard (:func:`shard`); after each backward the gradients are averaged
  across ranks weighted by shard size (:func:`average_gradients`), so the update is the
  gradient of the global batch mean. Buffers (BatchNorm statistics, power-iteration
  vectors) are broadcast from rank 0 after every step, so module state never drifts.
  Rank 0 alone reads and writes checkpoints and broadcasts what it read.
- Evaluation: batches are dealt round-robin (batch ``b`` to rank ``b % N``); a batch's
  attack randomness is seeded by the batch index, never by the rank, so gathered
  outcomes equal a single-process run's on the same points.
- What is bit-identical to one process: the data order, the global batches, the
  evaluation's per-batch seeds and (on the same CPU kind and thread count) the stored
  evaluation rows. What is not: float sums of gradients across ranks (last bits), the
  random starts of adversarial crafting during training (seeded per rank and step), and
  BatchNorm batch statistics in training mode (computed per shard, as in DDP without
  SyncBatchNorm).

Why not ``torch.nn.parallel.DistributedDataParallel``: adversarial objectives run
several forward passes per step (crafting in eval mode, then clean and adversarial
losses), and crafting takes input gradients only; DDP's reducer expects exactly one
backward through the parameters per forward. The all-reduce here is the same
arithmetic, without DDP's overlap of communication and backward.
"""
from __future__ import annotations

import atexit
import importlib
import os
import re
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advgeom.errors import AdvgeomError

# ---------------------------------------------------------------------------
# the world


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and stores results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world() -> World:
    """The current world: from the process group when one is initialized, else one process."""
    dist = _dist()
    if dist is None:
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """Whether this process was started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init_from_env(device: str = "cpu") -> tuple[World, str]:
    """Join the process group torchrun describes (gloo for CPU, NCCL for CUDA) and
    return the world and this rank's device (``cuda`` becomes ``cuda:<LOCAL_RANK>``).
    A no-op returning ``(World(), device)`` outside torchrun."""
    if not launched():
        return world(), device
    import torch.distributed as dist

    if not dist.is_available():
        raise AdvgeomError("this torch build has no torch.distributed; run one process")
    cuda = str(device).startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        if not torch.cuda.is_available():
            raise AdvgeomError("--device cuda under torchrun, but CUDA is not available")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # torch._dynamo imported while a group exists keeps that group alive past
        # destroy_process_group (torch 2.13): its gloo threads then outlive the
        # interpreter and a rank can end in SIGABRT ("terminate called without an active
        # exception") after its work is done. Imported first, it holds nothing.
        importlib.import_module("torch._dynamo")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        atexit.register(_leave)
        _PEERS[:] = all_gather_objects((socket.gethostname(), os.getpid()))
    return world(), device


def _leave() -> None:
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# a rank that dies


_PEERS: list[tuple[str, int]] = []   # (host, pid) of every rank, gathered when the group forms
# what gloo/NCCL say on a surviving rank when a peer's process is gone
_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker", "Broken pipe",
         "Socket Timeout", "NCCL communicator was aborted")


def _ended(pid: int) -> bool:
    """Whether process ``pid`` of this host has ended (gone, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:   # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def dead_peers(wait: float = 0.0) -> list[tuple[int, int]]:
    """``(rank, pid)`` of the ranks on this host whose process has ended, looking again
    for up to ``wait`` seconds (a peer's sockets close a moment before it ends)."""
    host, me = socket.gethostname(), os.getpid()
    deadline = time.monotonic() + wait
    while True:
        dead = [(r, pid) for r, (h, pid) in enumerate(_PEERS) if h == host and pid != me and _ended(pid)]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.02)


def resume_command() -> str:
    """The torchrun command that reruns this one (a rerun resumes from the checkpoints)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or size
    nodes = "--standalone" if local == size else f"--nnodes={size // local} (same rendezvous)"
    return f"torchrun {nodes} --nproc_per_node={local} -m advgeom {shlex.join(sys.argv[1:])}"


def peer_failure(exc: BaseException | None = None) -> str | None:
    """One line for this rank when a peer rank has died (its process ended, or ``exc``
    is the collective's lost-connection error), naming the dead peer and the command
    that resumes the run; ``None`` outside torchrun or when no peer is known dead."""
    if len(_PEERS) < 2:
        return None
    text = "" if exc is None else str(exc)
    lost = any(s in text for s in _LOST)
    dead = dead_peers(wait=0.5 if lost else 0.0)
    if dead:
        who = ", ".join(f"rank {r} (pid {pid})" for r, pid in dead)
    elif lost:
        addr = re.search(r"peer \[([^\]]+)\]", text)
        who = f"the peer rank at {addr.group(1)}" if addr else "a peer rank on another host"
    else:
        return None
    me = next((r for r, (h, pid) in enumerate(_PEERS) if pid == os.getpid()
               and h == socket.gethostname()), "?")
    return (f"{who} of {len(_PEERS)} died, so rank {me} stops too; resume from the last "
            f"checkpoint with: {resume_command()}")


# ---------------------------------------------------------------------------
# collectives (no-ops in one process)


def shard(t: torch.Tensor, w: World | None = None) -> torch.Tensor:
    """This rank's contiguous part of a global batch (sizes differ by at most one)."""
    w = w or world()
    return t if w.size == 1 else torch.tensor_split(t, w.size)[w.rank]


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for small records and checkpoints)."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    dist = _dist()
    if dist is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``t`` (in place; returned)."""
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(model: nn.Module, weight: float) -> None:
    """Replace every parameter gradient ``g_r`` by ``sum_r weight_r g_r`` (``weight``:
    this rank's share of the global batch), in one flat all-reduce. Parameters without
    a gradient on some rank take part with zeros, so every rank ends with the same
    gradients (and the same ``None``-ness: a zero gradient where any rank had one)."""
    dist = _dist()
    if dist is None:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * weight
                      for p in params])
    has = torch.tensor([float(p.grad is not None) for p in params], device=flat.device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    offset = 0
    for p, h in zip(params, has.tolist()):
        n = p.numel()
        if h > 0:
            p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_module(model: nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's buffers (and parameters unless ``buffers_only``) to every rank."""
    dist = _dist()
    if dist is None:
        return
    tensors = list(model.buffers()) + ([] if buffers_only else list(model.parameters()))
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)
