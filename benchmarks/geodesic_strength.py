"""Strength of the adaptive attack on geodesic rejection, configuration by configuration.

On a D-SphereNet checkpoint (for instance the PGD-trained D-SphereNet + WM that
``advgeom reproduce hyper-mnist --profile quick`` trains, ``runs/train/dsphere_mnist_wm-*``),
with geodesic rejection at p = 1 fitted on the first ``--stats`` training images, this
script attacks the accepted and correctly classified points among the first ``--points``
MNIST test images with ``geodesic_adaptive`` (linf) and prints, per configuration, how
many stay robust with rejection (correct, or rejected) and the gradient passes spent per
point:

  - at eps 1 (the whole box) without guides: what the ``unbounded_rejection`` check of a
    rejecting evaluation asks of an attack (at most 2% robust);
  - at eps 0.3 with guides: what hyper-mnist's evaluation runs, and the same with
    targeted runs under a cosine step.

    python benchmarks/geodesic_strength.py --checkpoint PATH [--points 64] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from advgeom.attacks.base import PassCounter
from advgeom.data import load
from advgeom.inference import GeodesicRejector
from advgeom.registry import get
from advgeom.results import environment
from advgeom.train.state import load_model

attack = get("attack", "geodesic_adaptive")

# (eps, options): the unguided configurations at eps 1, then the guided ones at eps 0.3
CONFIGS: tuple[tuple[float, dict], ...] = (
    (1.0, dict(steps=50)),
    (1.0, dict(steps=300)),
    (1.0, dict(steps=300, step_schedule="cosine")),
    (1.0, dict(steps=300, num_targets=9)),
    (1.0, dict(steps=200, num_targets=9, step_schedule="cosine")),
    (1.0, dict(steps=300, num_targets=9, step_schedule="cosine")),
    (1.0, dict(steps=500, num_targets=9, step_schedule="cosine")),
    (0.3, dict(steps=50, guides=20)),
    (0.3, dict(steps=100, guides=20, num_targets=9, step_schedule="cosine")),
    (0.3, dict(steps=300, guides=20, num_targets=9, step_schedule="cosine")),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a D-SphereNet checkpoint (final.safetensors)")
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--stats", type=int, default=5000, help="training images for the angle statistics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model = load_model(args.checkpoint).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    train, test = load("mnist", "train"), load("mnist", "test")
    rej = GeodesicRejector.fit(model, train.images[:args.stats], train.labels[:args.stats]).eval()
    x, y = test.images[:args.points].float(), test.labels[:args.points].long()
    with torch.no_grad():
        z, accept = rej.predict_with_rejection(x)
    keep = accept & (z.argmax(1) == y)
    xs, ys = x[keep], y[keep]
    lines = [f"# geodesic_adaptive strength on {args.checkpoint}",
             f"$ python benchmarks/geodesic_strength.py {' '.join(argv or sys.argv[1:])}",
             "environment: " + ", ".join(f"{k} {v}" for k, v in environment().items()),
             f"{len(ys)} accepted and correct points of the first {args.points} test images; "
             f"rejection at p = 1 from {args.stats} training images; linf; seed {args.seed}",
             "", "| eps | options | robust with rejection | gradient passes per point | seconds |",
             "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for eps, kw in CONFIGS:
        counter, t0 = PassCounter(), time.perf_counter()
        adv = attack(rej, xs, ys, eps=eps, counter=counter,
                     generator=torch.Generator().manual_seed(args.seed), **kw)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            za, aa = rej.predict_with_rejection(adv)
        robust = int(((za.argmax(1) == ys) | ~aa).sum())
        opts = ",".join(f"{k}={v}" for k, v in kw.items())
        row = (f"| {eps:g} | {opts} | {robust} of {len(ys)} | {counter.backwards / max(len(ys), 1):,.0f} "
               f"| {seconds:.0f} |")
        lines.append(row)
        print(row, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
