"""Speed of advgeom's PGD against the floor and against torchattacks (issue 3, "Speed").

On the same model, batch and step count it times
  - bare: a loop of ``steps`` forward + backward passes w.r.t. the input (the floor),
  - advgeom: ``advgeom.attacks.pgd`` as users call it (random start, best-iterate
    tracking, a sample leaves the batch at its first success),
  - advgeom-fixed: the same with ``early_stop=False`` (every sample takes every step:
    the same work as the others, plus one forward that scores the final iterate),
  - torchattacks: ``torchattacks.PGD`` (when installed),
interleaved, ``--repeats`` times, and prints min and median times and the ratios to
the bare loop and to torchattacks. Target on CPU: advgeom within 1.10x of the bare loop
and no slower than torchattacks.

Inputs: by default random images labelled with the model's own predictions, on the
seeded initial weights (attacks rarely succeed there, so early stopping does not
apply: a pure overhead measurement); with ``--train-steps N`` the model is first
trained N steps on MNIST and real test images are attacked (a realistic workload).

    python benchmarks/attack_speed.py                       # CPU, small MNIST CNN
    python benchmarks/attack_speed.py --train-steps 300     # trained, real images
    python benchmarks/attack_speed.py --model cw_mnist_cnn --steps 20
    python benchmarks/attack_speed.py --device cuda --amp --channels-last --batch 1024
    python benchmarks/attack_speed.py --out results/benchmarks/attack_speed.md  # keep a record

The machine may be shared: compare minima (or medians) over several repeats; on CPU
the process CPU time is printed as well (it does not count time spent descheduled).
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advgeom.registry import create, get
from advgeom.seeding import make_generator


def small_cnn() -> nn.Module:
    """The MNIST CNN of the peer tests (2 strided convolutions, 2 linear layers)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def build_model(name: str) -> nn.Module:
    if name == "small":
        return small_cnn()
    return create("model", name, num_classes=10)


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """``steps`` forward+backward passes w.r.t. the input: the cost floor of PGD."""
    for _ in range(steps):
        xa = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        torch.autograd.grad(loss, xa)


def trained_on_mnist(model: nn.Module, steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``model`` (CPU, Adam 1e-3, batch 128, seeded) for ``steps`` on MNIST and
    return the first ``batch`` test images and labels: a realistic attack workload, where
    samples break at different steps."""
    from advgeom.data import load

    train = load("mnist", "train")
    xs, ys = train.images, train.labels
    g = make_generator(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ys), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(xs[idx]), ys[idx]).backward()
        opt.step()
    model.eval()
    test = load("mnist", "test")
    xt, yt = test.images, test.labels
    return xt[:batch], yt[:batch]


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def report(times: dict[str, list[float]], what: str) -> list[str]:
    """Print (and return) the timing lines and the ratios against the floor and the peer."""
    lines = [f" {what}:"]
    for name, ts in times.items():
        lines.append(f"  {name:13s} min {min(ts) * 1e3:9.1f} ms   "
                     f"median {statistics.median(ts) * 1e3:9.1f} ms")
    for ours in ("advgeom", "advgeom-fixed"):
        for ref in ("bare", "torchattacks"):
            if ref in times:
                r_min = min(times[ours]) / min(times[ref])
                r_med = statistics.median(times[ours]) / statistics.median(times[ref])
                lines.append(f"  {ours:13s} / {ref:12s} {r_min:5.3f} (min)  {r_med:5.3f} (median)")
    print("\n".join(lines))
    return lines


def torch_setup(threads: int, device: str) -> torch.device:
    """Set the thread count (0: leave it) and check the device exists."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but not available")
    return dev


def append_record(path: Path, lines: list[str], device: torch.device) -> None:
    """Append this run (command, environment, timings) to a Markdown file under results/."""
    from advgeom.results.env import environment

    env = ", ".join(f"{k} {v}" for k, v in environment(device).items())
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    text = (f"\n## `{cmd}`\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {env}\n\n"
            "```\n" + "\n".join(lines) + "\n```\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small", help="'small' or a registered advgeom model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (advgeom evaluate --amp)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="train the model this many steps on MNIST and attack real test images "
                         "(0: seeded initial weights, random images labelled by the model)")
    ap.add_argument("--out", type=Path, default=None,
                    help="append the run (command, environment, timings) to this Markdown file")
    args = ap.parse_args()
    device = torch_setup(args.threads, args.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(args.model).to(device).eval()
    if args.train_steps:
        x, y = trained_on_mnist(model, args.train_steps, args.batch)
        x, y = x.to(device), y.to(device)
    else:
        g = make_generator(0)
        shape = getattr(model, "input_shape", (1, 28, 28))
        x = torch.rand(args.batch, *shape, generator=g).to(device)
        with torch.no_grad():  # the model's own predictions: every sample starts "correct"
            y = model(x).argmax(1)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    alpha = 2.5 * args.eps / args.steps
    pgd = get("attack", "pgd")
    runs: dict[str, Callable[[], object]] = {
        "bare": lambda: bare_loop(model, x, y, args.steps),
        "advgeom": lambda: pgd(model, x, y, eps=args.eps, steps=args.steps, step_size=alpha,
                               generator=make_generator(1, device)),
        "advgeom-fixed": lambda: pgd(model, x, y, eps=args.eps, steps=args.steps, step_size=alpha,
                                     generator=make_generator(1, device), early_stop=False),
    }
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps,
                              random_start=True)
        runs["torchattacks"] = lambda: ta(x, y)
    except ImportError:
        print("torchattacks not installed: skipping it")

    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp \
        else torch.autocast("cpu", enabled=False)
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    with amp:
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                w, c = timed(fn, device)
                wall[name].append(w)
                cpu[name].append(c)

    head = (f"model={args.model} device={device} batch={args.batch} steps={args.steps} "
            f"threads={torch.get_num_threads()} amp={args.amp} "
            f"channels_last={args.channels_last} repeats={args.repeats} "
            f"train_steps={args.train_steps}")
    print(head)
    lines = [head] + report(wall, "wall clock")
    if device.type == "cpu":
        lines += report(cpu, "process CPU time (less sensitive to other processes on a shared machine)")
    if args.out is not None:
        append_record(args.out, lines, device)

if __name__ == "__main__":
    main()
