"""Cost of an adversarial training step against a natural one (issue 10, "Performance").

On one model and batch it times, interleaved and ``--repeats`` times:
  - natural: one optimizer step of the ``ce`` objective (forward, backward, update),
  - pgd_at:  one step of ``pgd_at`` with ``k`` PGD steps (advgeom's registered ``pgd``,
    ``early_stop=false``: every sample takes every step),
  - trades:  one step of ``trades`` with ``k`` KL-ascent steps,
and prints the ratios pgd_at / natural against the budget ``k + 1`` and trades /
natural against ``k + 2`` (target: at most 1.05 x the budget). A crafting step is a
forward plus an input-gradient, which costs less than a training step's forward plus
the full backward, so the budget has room for the crafting bookkeeping.

    python benchmarks/train_speed.py                              # CPU, madry_mnist_cnn, k = 10
    python benchmarks/train_speed.py --model small_cnn --k 40
    python benchmarks/train_speed.py --out results/benchmarks/train_speed.md   # keep a record
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from advgeom.data import load
from advgeom.defenses.base import StepContext, split_loss
from advgeom.registry import create

from attack_speed import append_record, timed  # noqa: E402  (sibling benchmark script)


def make_step(model: torch.nn.Module, objective, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor, seed: int):
    def step() -> None:
        g = torch.Generator(device=x.device).manual_seed(seed)
        loss, _ = split_loss(objective(model, x, y, generator=g, context=StepContext(0, 0, 10, 10)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def base_parser(doc: str) -> argparse.ArgumentParser:
    """The options every step-cost benchmark shares (model, batch, repeats, threads, device, out)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="madry_mnist_cnn")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    return ap


def time_steps(args: argparse.Namespace, objectives: dict) -> tuple[torch.device, dict[str, list[float]]]:
    """Set threads and device, then time one optimizer step of each objective on the
    first ``args.batch`` MNIST training points (a fresh model each, one warm-up step,
    interleaved ``args.repeats`` times); returns the device and the wall times."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load("mnist", "train")
    x, y = data.images[: args.batch].to(device), data.labels[: args.batch].to(device)
    steps = {}
    for name, obj in objectives.items():
        torch.manual_seed(0)
        model = create("model", args.model).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps[name] = make_step(model, obj, opt, x, y, seed=1)
        steps[name]()  # warm-up
    times: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            times[name].append(timed(fn, device)[0])
    return device, times


def time_lines(times: dict[str, list[float]]) -> list[str]:
    return [f"  {name:8s} min {min(ts) * 1e3:9.1f} ms   median {statistics.median(ts) * 1e3:9.1f} ms"
            for name, ts in times.items()]


def ratio_line(times: dict[str, list[float]], name: str, budget: int, target: float) -> str:
    """``name / natural / budget`` (min and median) and its verdict against ``target``."""
    r_min = min(times[name]) / min(times["natural"]) / budget
    r_med = statistics.median(times[name]) / statistics.median(times["natural"]) / budget
    verdict = "within" if r_min <= target else "OVER"
    return (f"  {name:8s} / natural / {budget:3d} = {r_min:5.3f} (min)  {r_med:5.3f} (median)"
            f"   {verdict} the {target:g} target")


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--k", type=int, default=10, help="crafting steps")
    args = ap.parse_args()
    k = args.k
    objectives = {
        "natural": create("defense", "ce"),
        "pgd_at": create("defense", "pgd_at", eps=0.3,
                         attack=f"pgd:steps={k},step_size=0.01,early_stop=false"),
        "trades": create("defense", "trades", eps=0.3, steps=k, step_size=0.01),
    }
    device, times = time_steps(args, objectives)
    lines = [f" {args.model}, batch {args.batch}, k = {k}, {torch.get_num_threads()} threads, "
             f"{args.repeats} repeats:"] + time_lines(times)
    lines += [ratio_line(times, name, budget, 1.05) for name, budget in (("pgd_at", k + 1), ("trades", k + 2))]
    print("\n".join(lines))
    if args.out is not None:
        append_record(args.out, lines, device)


if __name__ == "__main__":
    main()
