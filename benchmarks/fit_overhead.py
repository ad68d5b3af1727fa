"""advgeom's training loop against a plain PyTorch loop (issue 16, "GPU path").

Both train the same model from the same weights for ``--steps`` natural (``ce``) steps
on the same MNIST batches held on the device: the plain loop is forward, cross-entropy,
backward, optimizer step and nothing else; ``advgeom.train.fit`` adds what makes a run
trustworthy (seeded per-step randomness, learning-rate schedule, loss read back every
25 steps on a GPU and every step on a CPU, the non-finite check, one checkpoint at the
end). Prints the per-step times of the two step loops (fit's as its history records it)
and their ratio fit / plain (target: at most 1.10x), and fit's whole call.

    python benchmarks/fit_overhead.py                                   # CPU
    python benchmarks/fit_overhead.py --device cuda --precision bf16 --batch 512 --steps 400
    python benchmarks/fit_overhead.py --out results/benchmarks/fit_overhead.md
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from advgeom.train import TrainConfig, build_model, fit
from advgeom.train.batches import Batches

from attack_speed import append_record, torch_setup  # noqa: E402  (sibling benchmark script)


def plain(cfg: TrainConfig, device: torch.device, steps: int) -> float:
    """Seconds of ``steps`` bare steps on the batches ``fit`` would draw."""
    model = build_model(cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = Batches(cfg, device)
    data = [batches.batch(s) for s in range(steps)]   # drawn before timing: the floor
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for x, y in data:
        with amp:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def ours(cfg: TrainConfig, device: torch.device) -> tuple[float, float]:
    """(seconds of the step loop as fit's history records it, seconds of the whole call:
    data loading, model construction and the final checkpoint included)."""
    root = Path(tempfile.mkdtemp(prefix="advgeom-bench-"))
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = fit(cfg, root=root, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(res.history[-1]["seconds"]), time.perf_counter() - t
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="madry_mnist_cnn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch_setup(args.threads, args.device)
    cfg = TrainConfig(dataset="mnist", model=args.model, objective="ce", batch_size=args.batch,
                      iterations=args.steps, checkpoint_every=10 ** 9, lr=1e-3,
                      precision=args.precision)
    fit_t, call_t, plain_t = [], [], []
    for r in range(args.repeats + 1):   # the first round warms up
        (a, c), b = ours(cfg, device), plain(cfg, device, args.steps)
        if r:
            fit_t.append(a)
            call_t.append(c)
            plain_t.append(b)
    per = lambda ts: min(ts) / args.steps * 1e3  # noqa: E731
    lines = [f"model={args.model} device={device} batch={args.batch} steps={args.steps} "
             f"precision={args.precision} threads={torch.get_num_threads()} repeats={args.repeats}",
             f"  plain loop  {per(plain_t):8.2f} ms/step (min)",
             f"  advgeom fit {per(fit_t):8.2f} ms/step (min, the step loop)",
             f"  fit call    {per(call_t):8.2f} ms/step (min, data loading, setup and final checkpoint included)",
             f"  fit / plain {min(fit_t) / min(plain_t):6.3f} (min, step loops)   "
             f"{statistics.median(fit_t) / statistics.median(plain_t):6.3f} (median)"]
    print("\n".join(lines))
    if args.out:
        append_record(args.out, lines, device)


if __name__ == "__main__":
    main()
