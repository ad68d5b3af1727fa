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

import time

import torch

from advgeom.analysis.jacobian import jacobians, spectrum
from advgeom.data import load
from advgeom.registry import create

from attack_speed import append_record  # noqa: E402  (sibling benchmark scripts)
from train_speed import base_parser, ratio_line, time_lines, time_steps  # noqa: E402


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--iters", type=int, default=10, help="power iterations of data_snr")
    ap.add_argument("--points", type=int, default=200, help="test points for the spectrum")
    args = ap.parse_args()
    n = args.iters
    device, times = time_steps(args, {"natural": create("defense", "ce"),
                                      "data_snr": create("defense", "data_snr", eps=1.0, iters=n)})
    lines = [f" {args.model}, batch {args.batch}, n = {n} power iterations, {torch.get_num_threads()} "
             f"threads, {args.repeats} repeats:"] + time_lines(times)
    lines.append(ratio_line(times, "data_snr", n + 2, 1.1))

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
