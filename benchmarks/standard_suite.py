"""advgeom's standard suite vs pyautoattack's AutoAttack "standard" on the same points.

Issue 14's criterion: robust accuracy within 0.5 points of pyautoattack's standard run on
models the tests never see, and the wall-time ratio (target: at most 0.5x pyautoattack's
time). Both run the same attacks in the same order (APGD-CE, APGD-T 9 targets, FAB-T 9
targets, Square 5000 queries) on the same points, one thread each, one after the other.

Model: an MLP (784-200-200-10) trained with FGSM-RS adversarial training at eps 0.1 on
MNIST for ``--train-steps`` Adam steps (seeded), so the attacks have something to do.

    python benchmarks/standard_suite.py [--points 200] [--eps 0.1] [--train-steps 600]
        [--out results/benchmarks/standard_suite.md]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advgeom.data import load
from advgeom.eval import standard_suite
from advgeom.results import environment
from advgeom.seeding import make_generator


def train_mlp(steps: int, eps: float) -> nn.Module:
    """FGSM-RS adversarial training (Wong et al. 2020), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(),
                              nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))
    train = load("mnist", "train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = make_generator(1)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (128,), generator=g)
        x, y = train.images[idx], train.labels[idx]
        d = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        d.requires_grad_(True)
        loss = F.cross_entropy(model((x + d).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, d)
        d = (d + 1.25 * eps * grad.sign()).clamp(-eps, eps).detach()
        loss = F.cross_entropy(model((x + d).clamp(0, 1)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--train-steps", type=int, default=600)
    ap.add_argument("--out", default="results/benchmarks/standard_suite.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from pyautoattack import AutoAttack

    model = train_mlp(args.train_steps, args.eps)
    for p in model.parameters():
        p.requires_grad_(False)
    test = load("mnist", "test")
    x, y = test.images[7000:7000 + args.points], test.labels[7000:7000 + args.points]

    t0 = time.perf_counter()
    res = standard_suite(model, (x, y), [args.eps], batch_size=args.points, progress=False,
                         checks=False)
    t_ours = time.perf_counter() - t0
    ours = {s.label: res.accuracy(s.label, args.eps) for s in res.specs}

    aa = AutoAttack(model, norm="Linf", eps=args.eps, version="standard", seed=0, device="cpu")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        adv, _ = aa.run_standard_evaluation(x, y, batch_size=args.points)
    t_ref = time.perf_counter() - t0
    with torch.no_grad():
        theirs = 100.0 * float(((model(x).argmax(1) == y) & (model(adv).argmax(1) == y)).double().mean())
    clean = res.accuracy("none")

    env = environment("cpu")
    lines = [
        "# advgeom standard suite vs pyautoattack AutoAttack (standard)", "",
        f"Command: `python {' '.join(sys.argv)}`", "",
        f"Model: MLP 784-200-200-10, FGSM-RS adversarial training eps {args.eps}, "
        f"{args.train_steps} Adam steps; {args.points} MNIST test points (7000-); linf eps {args.eps}; "
        "one thread.", "",
        "| quantity | advgeom | pyautoattack |", "|---|---|---|",
        f"| clean accuracy | {clean:.2f} | - |",
        *(f"| after {k} | {v:.2f} | - |" for k, v in ours.items()),
        f"| robust accuracy (standard) | {res.accuracy('worst_case', args.eps):.2f} | {theirs:.2f} |",
        f"| wall time (s) | {t_ours:.1f} | {t_ref:.1f} |",
        f"| time ratio advgeom / pyautoattack | {t_ours / t_ref:.2f} | |", "",
        f"Difference: {res.accuracy('worst_case', args.eps) - theirs:+.2f} points "
        "(criterion: within 0.5).", "",
        "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
