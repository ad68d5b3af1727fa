"""What a run costs, in FLOPs and hours, for ``advgeom reproduce --plan`` (issue 27).

FLOPs are counted, not guessed, for one thing only: the forward pass of a model on one
input of its real shape (:func:`forward_flops`, ``torch.utils.flop_counter``: matrix
products and convolutions, ``2*in*out`` for a Linear layer). Everything else is a pass
count from the settings, under stated rules (:data:`RULES`):

- a gradient pass (forward + backward) costs :data:`GRAD_PASS` forwards;
- an attack spends, per point and eps, the product of its budget options
  (:data:`BUDGET`: steps or queries, restarts, target classes, C&W's search rounds,
  DeepFool's candidate classes; each from the spec, its alias or the attack's default,
  as :func:`~advgeom.attacks.spec.cap_spec` resolves them) in gradient passes, or in
  forwards for a gradient-free attack, plus one forward; the guided and targeted runs
  of the adaptive attack on geodesic rejection (its ``extra_runs``) add to the restarts
  instead; a single-step attack one gradient
  pass;
- a training step spends per example its crafting (:func:`craft_passes`) plus one
  gradient pass per branch of the loss (two for TRADES, MART and PGA-AT: clean and
  adversarial).

Counts are upper bounds where attacks stop early (on success, on points already broken
by earlier stages of a cascade).
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from advgeom.attacks.spec import SMOKE_CAPS, AttackSpec, budget_values, parse_attack_spec
from advgeom.registry import get

GRAD_PASS = 3.0                    # forward + backward = 3 forwards (backward ~ 2 forwards)
BUDGET = tuple(SMOKE_CAPS)         # the options that set an attack's work (those --smoke caps)
TWO_BRANCH = {"trades": 2, "mart": 2}          # loss on clean and adversarial, always
# Objectives whose inner loop is not an attack: grad passes per example per iteration
# (data-dependent power method: a Jacobian-vector and a vector-Jacobian product; PGA-AT:
# one gradient-ascent step; the global power method works on weights, not examples).
ITERATION_PASSES = {"data_snr": 2.0, "pga_at": 1.0, "global_snr": 0.0}

# GPU classes: dense TF32 peak (NVIDIA data sheets, SXM parts) and the share of it that
# small convolutional networks sustain (an assumption; rescale with your own measurement).
GPU_PEAK = {"A100": 156e12, "H100": 495e12}
GPU_UTILISATION = 0.3
# CPU: train_speed.py's matmul floor when recorded, times the share a training step
# reaches of it; without a record, a default floor (a 2-core AVX2 server, 1 thread).
CPU_DEFAULT_FLOOR = 50e9
CPU_UTILISATION = 0.5
FLOOR_RECORD = Path("results") / "benchmarks" / "train_speed.md"
_FLOOR = re.compile(r"of the ([0-9.]+) GFLOP/s matmul floor on (\d+) threads")

RULES = (f"1 gradient pass = {GRAD_PASS:g} forwards; attack per point and eps = product of its "
         f"budget ({', '.join(b for b in BUDGET if b != 'guides')}; geodesic_adaptive's guides and "
         "num_targets add to restarts) gradient "
         "passes (forwards if gradient-free) + 1 forward; "
         "training per example = crafting + 1 gradient pass per loss branch (TRADES/MART/PGA-AT: 2); "
         "time = FLOPs / (peak x utilisation)")


def forward_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward of ``model`` on one input shaped like ``example`` (one
    example, its own shape, zeros on the model's device), counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(iter(model.parameters()), None)
    x = torch.zeros((1, *example.shape), dtype=example.dtype if example.is_floating_point() else torch.float32,
                    device=p.device if p is not None else "cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Passes:
    """Passes per point: gradient passes and plain forwards."""

    grad: float = 0.0
    forward: float = 0.0

    @property
    def forwards(self) -> float:
        """In forward equivalents (:data:`GRAD_PASS` a gradient pass)."""
        return GRAD_PASS * self.grad + self.forward

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.grad + other.grad, self.forward + other.forward)

    def __mul__(self, k: float) -> "Passes":
        return Passes(self.grad * k, self.forward * k)


def budget(spec: AttackSpec, num_classes: int = 10) -> dict[str, int]:
    """The budget options the attack uses, resolved like :func:`cap_spec` (spec, alias,
    the function's default); targets and candidates at most the other classes (``None``: all)."""
    fn = spec.fn
    info = getattr(fn, "info", None)
    kw = spec.call_kwargs()
    if info is not None and getattr(info, "transfer", False):   # the crafting attack's budget
        inner = {k: kw[k] for k in ("steps", "restarts") if k in kw}
        return budget(AttackSpec(str(kw.get("attack", "pgd")), {**inner, **(kw.get("attack_kwargs") or {})}),
                      num_classes)
    out: dict[str, int] = {}
    for key, value in budget_values(spec, BUDGET).items():
        if key in ("num_targets", "candidates") and (value is None or isinstance(value, int)):
            value = num_classes - 1 if value is None else min(value, num_classes - 1)   # other classes only
        if isinstance(value, int):
            out[key] = value
    return out


def attack_passes(spec: AttackSpec | str, num_classes: int = 10) -> Passes:
    """Passes one attack spends per point and eps (module docstring's rule)."""
    spec = parse_attack_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "single_step":
        return Passes(grad=1, forward=1)
    b = budget(spec, num_classes)
    extra = getattr(getattr(spec.fn, "info", None), "extra_runs", ())
    runs = max(1, b.pop("restarts", 1)) + sum(b.pop(k, 0) for k in extra)   # runs after the restarts
    work = runs * math.prod(max(1, v) for v in b.values())
    if spec.kind == "black_box":
        return Passes(forward=work + 1)
    return Passes(grad=work, forward=1)


def craft_passes(objective: str, kwargs: Mapping[str, Any], num_classes: int = 10) -> Passes:
    """Passes a training objective spends per example crafting (or in its inner loop)
    before its training pass: its ``attack`` spec, else its own ``steps`` (one gradient
    pass each), else its ``iters`` (:data:`ITERATION_PASSES`); an objective wrapping
    another (``base``/``base_kwargs``) costs the inner one's; ``adversarial=False``: none."""
    params = inspect.signature(get("defense", objective)).parameters

    def given(key: str) -> Any:
        return kwargs.get(key, params[key].default) if key in params else None

    if "base" in params and "base_kwargs" in params:
        return craft_passes(given("base"), given("base_kwargs") or {}, num_classes)
    if "adversarial" in params and not given("adversarial"):
        return Passes()
    if isinstance(given("attack"), str) and given("attack"):
        return attack_passes(given("attack"), num_classes)
    if objective == "fgsm_at":
        return Passes(grad=1, forward=1)
    if isinstance(given("steps"), int):
        return Passes(grad=given("steps"), forward=1)
    if isinstance(given("iters"), int):
        return Passes(grad=ITERATION_PASSES.get(objective, 1.0) * given("iters"))
    return Passes()


def loss_branches(objective: str, kwargs: Mapping[str, Any]) -> int:
    """Training forwards (each with its backward) of one step: 2 where the loss has a clean
    and an adversarial branch (TRADES, MART; ``pgd_at``/``fgsm_at`` with ``mix``; PGA-AT's
    ``sos`` loss), else 1; an objective wrapping another counts the inner one's."""
    params = inspect.signature(get("defense", objective)).parameters

    def given(key: str) -> Any:
        return kwargs.get(key, params[key].default) if key in params else None

    if "base" in params and "base_kwargs" in params:
        return loss_branches(given("base"), given("base_kwargs") or {})
    if objective in TWO_BRANCH or (objective == "pga_at" and given("loss") == "sos"):
        return 2
    return 2 if objective in ("pgd_at", "fgsm_at") and given("mix") else 1


def training_passes(objective: str, kwargs: Mapping[str, Any], num_classes: int = 10) -> Passes:
    """Passes per training example: crafting plus one gradient pass per loss branch."""
    return craft_passes(objective, kwargs, num_classes) + Passes(grad=loss_branches(objective, kwargs))


# ---------------------------------------------------------------------------
# rates


def cpu_rate(search: tuple[Path, ...] = ()) -> tuple[float, str]:
    """``(sustained FLOP/s, where it comes from)`` of this CPU: the last matmul floor
    recorded by ``benchmarks/train_speed.py`` in ``results/benchmarks/train_speed.md``
    (under the working directory, the source tree, or ``search``) times
    :data:`CPU_UTILISATION`, else :data:`CPU_DEFAULT_FLOOR` times it, said so."""
    places = (*search, Path.cwd() / FLOOR_RECORD, Path(__file__).resolve().parents[3] / FLOOR_RECORD)
    for path in places:
        if path.is_file():
            found = _FLOOR.findall(path.read_text(errors="replace"))
            if found:
                gflops, threads = found[-1]
                floor = float(gflops) * 1e9
                return floor * CPU_UTILISATION, (f"matmul floor {float(gflops):.1f} GFLOP/s on {threads} "
                                                 f"thread(s) recorded in {path} x utilisation {CPU_UTILISATION:g}")
    return CPU_DEFAULT_FLOOR * CPU_UTILISATION, (
        f"no floor measurement recorded ({FLOOR_RECORD} has none; run benchmarks/train_speed.py --out "
        f"{FLOOR_RECORD}): default floor {CPU_DEFAULT_FLOOR / 1e9:g} GFLOP/s x utilisation {CPU_UTILISATION:g}")


def rates(search: tuple[Path, ...] = ()) -> list[tuple[str, float, str]]:
    """``(machine, sustained FLOP/s, rule)`` for each GPU class and this CPU."""
    out = [(f"{name}-class GPU", peak * GPU_UTILISATION,
            f"TF32 dense peak {peak / 1e12:g} TFLOP/s x utilisation {GPU_UTILISATION:g}")
           for name, peak in GPU_PEAK.items()]
    rate, why = cpu_rate(search)
    return out + [("this CPU", rate, why)]


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``7.1 h``, ``12.3 days``."""
    for unit, size, least in (("days", 86400.0, 172800.0), ("h", 3600.0, 7200.0), ("min", 60.0, 60.0)):
        if seconds >= least:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def flops_text(flops: float) -> str:
    """``1.23e+15 FLOP``."""
    return f"{flops:.3g} FLOP"
