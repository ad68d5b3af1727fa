"""Cost of data-dependent spectral norm regularization and of Jacobian spectra
(issue 13, "Performance"; spectral-norm-adversarial-training.txt).

1. ``data_snr`` with ``n`` power iterations against a natural step, interleaved and
   ``--repeats`` times on one model and batch. A step needs ``n`` power iterations
   (one Jacobian-vector and one vector-Jacobian product each: a forward and a backward
   pass) plus the penalized training step (CE forward, the two penalty forwards and one
   backward through them), i.e. ``n + 2`` natural steps; the ratio
   ``data_snr / natural / (n + 2)`` should be at most 1.1.
2. The exact per-sample Jacobian spectrum (``jacrev`` + ``vmap``, ``svdvals``) of 200
   MNIST test points; target: under a minute on 2 cores.

    python benchmarks/spectral.py --threads 2
    python benchmarks/spectral.py --threads 2 --out results/benchmarks/spectral.md
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from advgeom.analysis.jacobian import jacobians, spectrum
from advgeom.data import load
from advgeom.registry import create

from attack_speed import append_record, timed  # noqa: E402  (sibling benchmark script)
from train_speed import make_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="madry_mnist_cnn")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10, help="power iterations of data_snr")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--points", type=int, default=200, help="test points for the spectrum")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load("mnist", "train")
    x, y = data.images[: args.batch].to(device), data.labels[: args.batch].to(device)
    n = args.iters
    objectives = {"natural": create("defense", "ce"),
                  "data_snr": create("defense", "data_snr", eps=1.0, iters=n)}
    steps = {}
    for name, obj in objectives.items():
        torch.manual_seed(0)
        model = create("model", args.model).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps[name] = make_step(model, obj, opt, x, y, seed=1)
        steps[name]()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            times[name].append(timed(fn, device)[0])
    lines = [f" {args.model}, batch {args.batch}, n = {n} power iterations, {torch.get_num_threads()} "
             f"threads, {args.repeats} repeats:"]
    for name, ts in times.items():
        lines.append(f"  {name:8s} min {min(ts) * 1e3:9.1f} ms   median {statistics.median(ts) * 1e3:9.1f} ms")
    budget = n + 2
    r_min = min(times["data_snr"]) / min(times["natural"]) / budget
    r_med = statistics.median(times["data_snr"]) / statistics.median(times["natural"]) / budget
    lines.append(f"  data_snr / natural / {budget} = {r_min:5.3f} (min)  {r_med:5.3f} (median)   "
                 f"{'within' if r_min <= 1.1 else 'OVER'} the 1.1 target")

    test = load("mnist", "test")
    torch.manual_seed(0)
    model = create("model", args.model).to(device).eval()
    xs = test.images[: args.points].to(device)
    t0 = time.perf_counter()
    s = spectrum(jacobians(model, xs))
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    lines.append(f" exact Jacobian spectrum of {args.points} MNIST test points ({args.model}, "
                 f"{tuple(s.shape)} singular values): {secs:.1f} s   "
                 f"{'within' if secs < 60 else 'OVER'} the 60 s target")
    print("\n".join(lines))
    if args.out is not None:
        append_record(args.out, lines, device)


if __name__ == "__main__":
    main()
