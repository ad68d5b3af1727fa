"""Where the standard suite's time goes: per stage, advgeom vs pyautoattack, and the cost
of the model passes alone.

Same model and points as ``benchmarks/standard_suite.py`` (its ``train_mlp``). advgeom's
attacks run one after the other on the points every earlier stage left robust (the
cascade of ``standard_suite``, without the evaluator's bookkeeping); pyautoattack's stage
times come from its own log ("total time" after each attack). The floor: a bare loop of
as many forwards (Square) and forward+backward passes (APGD-T, FAB-T) on the same batch
as advgeom's attacks counted (``PassCounter``), no attack arithmetic around them.

    python benchmarks/suite_stages.py [--points 200] [--eps 0.1] [--train-steps 600]
        [--threads 1] [--out results/benchmarks/suite_stages.md]
"""
from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from standard_suite import model_and_points, parser  # noqa: E402

from advgeom.attacks.base import PassCounter  # noqa: E402
from advgeom.eval.suite import suite_specs  # noqa: E402
from advgeom.registry import get  # noqa: E402
from advgeom.results import environment  # noqa: E402
from advgeom.seeding import make_generator  # noqa: E402


def ours(model, x, y, eps):
    """(label, seconds, points attacked, forwards, backwards) per stage of the cascade."""
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    rows = []
    for spec in suite_specs("standard", "linf", 10):
        idx = robust.nonzero().squeeze(1)
        counter = PassCounter()
        t0 = time.perf_counter()
        adv = get("attack", spec.name)(model, x[idx], y[idx], eps=eps, generator=make_generator(0),
                                       counter=counter, **spec.kwargs)
        dt = time.perf_counter() - t0
        with torch.no_grad():
            robust[idx] = model(adv).argmax(1) == y[idx]
        rows.append((spec.label, dt, idx.numel(), counter.forwards, counter.backwards))
    return rows, robust


def floor(model, x, forwards: int, backwards: int) -> float:
    """Seconds of bare passes on batches of ``len(x)``: as many sample-forwards and
    sample-backwards (a backward comes with its forward) as counted."""
    n = len(x)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(max(forwards - backwards, 0) // n):
            model(x)
    xg = x.clone().requires_grad_(True)
    for _ in range(backwards // n):
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), torch.zeros(n, dtype=torch.long)), xg)
    return time.perf_counter() - t0


def theirs(model, x, y, eps):
    """pyautoattack's per-stage seconds from its log."""
    from pyautoattack import AutoAttack

    lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger("auto-attack")
    log.setLevel(logging.DEBUG)
    log.addHandler(Grab())
    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        aa.run_standard_evaluation(x, y, batch_size=len(x))
    total = time.perf_counter() - t0
    cum = [(m.group(1).lower(), float(m.group(2))) for line in lines
           if (m := re.search(r"robust accuracy after (\S+): .*total time ([0-9.]+) s", line))]
    stages, prev = [], 0.0
    for name, t in cum:
        stages.append((name, t - prev))
        prev = t
    return stages, total


def main() -> None:
    args = parser(__doc__, "results/benchmarks/suite_stages.md").parse_args()
    model, x, y = model_and_points(args)

    rows, robust = ours(model, x, y, args.eps)
    stages, total = theirs(model, x, y, args.eps)
    bare = []
    for label, _, n, fw, bw in rows:
        sub = x[:n] if n else x[:1]
        bare.append(floor(model, sub, fw, bw) if n else 0.0)
    lines = [f"## Run of {time.strftime('%Y-%m-%d %H:%M')}: standard suite, time per stage", "",
             f"Command: `python {' '.join(sys.argv)}`", "",
             f"Model and points as benchmarks/standard_suite.py ({args.points} points, linf eps {args.eps}, "
             f"{args.threads} thread(s)); one run each, advgeom first.", "",
             "| stage | points | advgeom (s) | model passes alone (s) | forwards / backwards (samples) "
             "| pyautoattack (s) |", "|---|---|---|---|---|---|"]
    for (label, dt, n, fw, bw), b, (_, t) in zip(rows, bare, stages + [("", float("nan"))] * len(rows)):
        lines.append(f"| {label} | {n} | {dt:.2f} | {b:.2f} | {fw} / {bw} | {t:.2f} |")
    lines += [f"| total | | {sum(r[1] for r in rows):.2f} | {sum(bare):.2f} | | {total:.2f} |", "",
              f"Robust accuracy: advgeom {100 * float(robust.double().mean()):.2f}, "
              f"pyautoattack stages: {', '.join(n for n, _ in stages)}.", "",
              "Environment: " + ", ".join(f"{k}={v}" for k, v in environment("cpu").items()), "", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
