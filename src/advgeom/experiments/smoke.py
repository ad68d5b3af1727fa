"""``--smoke`` (docs/design.md "Profiles and provenance"; issues 25 and 27): any profile of any
experiment, with every loop that grows with the profile capped, run end to end in seconds
on the real models, input shapes and data sets, so that a paper profile is proven before
anyone pays for it.

Where the caps live:

- training: :func:`advgeom.train.smoke_config` (one step on a batch of 2, the monitor
  on a few points, the objective's crafting attack and inner loops capped), applied by
  :meth:`Context.fit <advgeom.experiments.base.Context.fit>` and ``Context.train``;
- attacks: :func:`advgeom.attacks.spec.cap_spec` (steps, restarts, target classes, C&W's
  search rounds, DeepFool's candidates; labels kept), applied by ``Context.evaluate`` and
  ``Context.suite``, which also attack :data:`SMOKE_POINTS` points in one batch
  (:func:`pick_points`) and cap the unbounded-attack check (:func:`smoke_check_config`);
- an experiment's own loops (Monte-Carlo samples, statistics, sweeps, direct attack calls):
  ``Context.size``, ``first``, ``capped`` and ``smoke_kwargs`` with the sizes below.

Where a smoke run writes: everything under ``root/smoke`` (run directory, results store
``root/smoke/results.sqlite``, reports ``root/smoke/reports/NAME``); its rows and report
carry the profile label ``<profile>+smoke`` and its command ends with ``--smoke``, so it
never mixes with real results or caches (the smoke configs hash differently, too).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch
from torch import nn

from advgeom.attacks.spec import SMOKE_CAPS, cap_spec_text
from advgeom.data.base import TensorData
from advgeom.eval.checks import CheckConfig
from advgeom.eval.rejection import predict
from advgeom.eval.units import device_of, unpack
from advgeom.train.build import SMOKE_BATCH, SMOKE_MONITOR, SMOKE_STEPS

SMOKE = "smoke"           # the subdirectory of the run root and the profile label's suffix
SMOKE_POINTS = 1          # evaluated points (the batch): clean-correct ones first,
SMOKE_SCAN = 32           # looked for among the first SMOKE_SCAN, so that the attacks run at all
SMOKE_SAMPLES = 100       # an experiment's own sample counts: Monte-Carlo draws, statistics, figures
SMOKE_SWEEP = 2           # entries of a sweep (dimensions, sizes, constants) where the shape is not the point
SMOKE_ITERS = 2           # an experiment's own iteration counts (direct attack calls, power steps)
SMOKE_UNBOUNDED = "pgd:steps=2,loss=margin"   # the unbounded-attack check's attack


def smoke_note() -> str:
    """What ``--smoke`` caps, for the report."""
    attack = ", ".join(f"{k} {v}" for k, v in SMOKE_CAPS.items())
    return (f"Smoke run (`--smoke`): the profile's models, shapes and data with every loop that grows "
            f"with the profile capped: {SMOKE_STEPS} training step(s) of batch at most {SMOKE_BATCH} "
            f"(monitor on {SMOKE_MONITOR} points; crafting and power iterations at most "
            f"{SMOKE_CAPS['steps']}), {SMOKE_POINTS} evaluated point(s) (clean-correct ones first), attack "
            f"budgets at most {attack}, and the experiment's own sample counts and sweeps cut to a few. "
            "It proves that the profile runs end to end; its numbers and check verdicts mean nothing.")


def smoke_check_config(config: CheckConfig | None, n: int) -> CheckConfig:
    """The evaluation checks of a smoke run: all of them, the unbounded attack on at most
    ``n`` points with :data:`SMOKE_UNBOUNDED`, the rejection-aware one capped."""
    config = config or CheckConfig()
    return dataclasses.replace(config, unbounded_subset=min(config.unbounded_subset, n),
                               unbounded_attack=SMOKE_UNBOUNDED,
                               unbounded_rejection_attack=cap_spec_text(config.unbounded_rejection_attack))


def pick_points(model: nn.Module, data: Any, picked: dict[tuple[int, int], Any]) -> Any:
    """The :data:`SMOKE_POINTS` points of ``data`` (TensorData or ``(inputs, labels)``) a
    smoke evaluation attacks: clean-correct ones first (a model trained for a step gets
    few right, and an evaluation attacks only correct points), looked for in chunks among
    the first :data:`SMOKE_SCAN`, then the first others; in their order in ``data``. The
    choice is kept in ``picked`` per model and data (a run evaluates them several times)."""
    x, y, _, _ = unpack(data, SMOKE_SCAN)
    if model.training:   # evaluate() refuses it with its own message
        return data
    images = getattr(data, "images", None)
    key = (id(model), id(data[0] if images is None else images))
    if key not in picked:
        chunk, correct = 4 * SMOKE_POINTS, torch.zeros(0, dtype=torch.bool)
        with torch.no_grad():
            for start in range(0, len(y), chunk):
                xb = x[start:start + chunk]
                pred = predict(model, xb.to(device_of(model, xb)))[0].cpu()
                correct = torch.cat([correct, pred == y[start:start + chunk].cpu()])
                if int(correct.sum()) >= SMOKE_POINTS:
                    break
        first = torch.argsort((~correct).to(torch.int8), stable=True)[:SMOKE_POINTS]
        picked[key] = (model, data, first.sort().values)   # the objects held keep their ids
    idx = picked[key][2]
    if isinstance(data, TensorData):
        return data.subset(indices=idx)
    return x[idx], y[idx]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread, then restore the count: for tiny nets and batches
    (smoke-sized runs, the spheres' small nets) a second thread only adds waiting (a
    one-point evaluation of penalty-mnist's plan took 54 s of CPU on 2 threads of a
    loaded 2-core machine, 9 s on one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
