"""Peer agreement on models the test suite never sees.

The peer tests (tests/attacks) compare advgeom with torchattacks and pyautoattack on one
MNIST CNN. This script repeats the comparison on other architectures, training regimes,
eps, step counts and seeds, and prints robust accuracy ``advgeom/peer`` per cell:

  - ``pgd`` vs torchattacks ``PGD`` (random start, step 2.5 eps / steps),
  - ``apgd`` with CE and DLR vs pyautoattack ``APGDAttack`` (one restart).

Models: an MLP (784-256-256-10) trained naturally, the same MLP and a small CNN trained
with FGSM-RS adversarial training at eps 0.1 (so that APGD has something to work on).
Issue 3's criterion: advgeom at most 1 point above the peer (never weaker by more).

    python benchmarks/peer_agreement.py [--points 500] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.data import load
from advgeom.registry import get
from advgeom.results import environment
from advgeom.seeding import make_generator

pgd, apgd = get("attack", "pgd"), get("attack", "apgd")


# ----------------------------------------------------------------------------- models


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, 10))


def trained(build: Callable[[], nn.Module], steps: int, seed: int, adversarial: bool,
            train) -> nn.Module:
    """Adam 1e-3, batch 128; with ``adversarial`` each batch is replaced by one FGSM-RS
    step (eps 0.1, step 0.125) crafted by advgeom's ``pgd`` on the current model."""
    torch.manual_seed(seed)
    model = build()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = make_generator(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (128,), generator=g)
        xb, yb = train.images[idx], train.labels[idx]
        if adversarial:
            model.eval()
            xb = pgd(model, xb, yb, eps=0.1, steps=1, step_size=0.125, generator=g,
                     early_stop=False)
            model.train()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def robust_accuracy(model: nn.Module, x: Tensor, adv: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        ok = (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)
    return 100 * ok.double().mean().item()


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=500, help="MNIST test points")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also append the output to this file")
    args = ap.parse_args(argv)
    import torchattacks
    from pyautoattack import autopgd_base

    torch.set_num_threads(args.threads)
    train, test = load("mnist", "train"), load("mnist", "test")
    x, y = test.images[:args.points], test.labels[:args.points]
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    worst = float("-inf")
    for name, build, steps, adversarial in (("mlp", mlp, 600, False), ("mlp-at", mlp, 600, True),
                                            ("cnn-at", cnn, 300, True)):
        t = time.time()
        m = trained(build, steps, 1, adversarial, train)
        say(f"== {name} trained in {time.time() - t:.0f}s, clean "
            f"{robust_accuracy(m, x, x, y):.1f}")
        for eps in (0.05, 0.1, 0.15):
            for st in (20, 100):
                for seed in (0, 1):
                    ours = robust_accuracy(m, x, pgd(m, x, y, eps=eps, steps=st,
                                                     step_size=2.5 * eps / st,
                                                     generator=make_generator(seed)), y)
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        ref = torchattacks.PGD(m, eps=eps, alpha=2.5 * eps / st, steps=st,
                                               random_start=True)
                        theirs = robust_accuracy(m, x, ref(x, y), y)
                    cells = [f"pgd {ours:.1f}/{theirs:.1f}"]
                    worst = max(worst, ours - theirs)
                    for loss in ("ce", "dlr"):
                        ours = robust_accuracy(m, x, apgd(m, x, y, eps=eps, steps=st, loss=loss,
                                                          generator=make_generator(seed)), y)
                        with torch.random.fork_rng(devices=[]):  # pyautoattack seeds torch
                            ref = autopgd_base.APGDAttack(m, n_iter=st, norm="Linf", eps=eps,
                                                          loss=loss, seed=seed, device=x.device)
                            theirs = robust_accuracy(m, x, ref.perturb(x, y), y)
                        cells.append(f"apgd-{loss} {ours:.1f}/{theirs:.1f}")
                        worst = max(worst, ours - theirs)
                    say(f"{name} eps={eps} steps={st} seed={seed}: " + "  ".join(cells))
    say(f"largest advgeom - peer robust accuracy: {worst:+.1f} points (criterion: <= +1.0)")
    if args.out:
        with args.out.open("a") as f:
            f.write(f"$ python benchmarks/peer_agreement.py {' '.join(argv or sys.argv[1:])}\n")
            env = ", ".join(f"{k} {v}" for k, v in environment().items())
            f.write(f"{env}, torchattacks {torchattacks.__version__}\n")
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
