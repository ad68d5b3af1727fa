"""advgeom's standard suite vs pyautoattack's AutoAttack "standard" on the same points.

Issue 14's criterion: robust accuracy within 0.5 points of pyautoattack's standard run on
models the tests never see, and the wall-time ratio (target: at most 0.5x pyautoattack's
time). Both run the same attacks in the same order (APGD-CE, APGD-T 9 targets, FAB-T 9
targets, Square 5000 queries) on the same points, ``--threads`` threads (default 1), one
after the other; with ``--repeats R`` the pair runs R times in alternating order (ours
first, then theirs first, ...) and the medians are reported, so that load from other
work on a shared machine hits both alike. Each run is appended to ``--out``.

Model: an MLP (784-200-200-10) trained with FGSM-RS adversarial training at eps 0.1 on
MNIST for ``--train-steps`` Adam steps (seeded), so the attacks have something to do.

    python benchmarks/standard_suite.py [--points 200] [--eps 0.1] [--train-steps 600]
        [--threads 1] [--repeats 1] [--out results/benchmarks/standard_suite.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options this benchmark shares with ``suite_stages.py``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--train-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=out)
    return ap


def model_and_points(args: argparse.Namespace) -> tuple[nn.Module, Tensor, Tensor]:
    """Set the thread count; the frozen trained MLP and MNIST test points 7000-."""
    torch.set_num_threads(args.threads)
    model = train_mlp(args.train_steps, args.eps)
    for p in model.parameters():
        p.requires_grad_(False)
    test = load("mnist", "test")
    return model, test.images[7000:7000 + args.points], test.labels[7000:7000 + args.points]


def main() -> None:
    ap = parser(__doc__, "results/benchmarks/standard_suite.md")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    from pyautoattack import AutoAttack

    model, x, y = model_and_points(args)

    def ours_run() -> tuple[float, object]:
        t0 = time.perf_counter()
        r = standard_suite(model, (x, y), [args.eps], batch_size=args.points, progress=False,
                           checks=False)
        return time.perf_counter() - t0, r

    def ref_run() -> tuple[float, Tensor]:
        aa = AutoAttack(model, norm="Linf", eps=args.eps, version="standard", seed=0, device="cpu")
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            a, _ = aa.run_standard_evaluation(x, y, batch_size=args.points)
        return time.perf_counter() - t0, a

    t_ours_all, t_ref_all = [], []
    for rep in range(args.repeats):
        for which in ((ours_run, ref_run) if rep % 2 == 0 else (ref_run, ours_run)):
            t, out = which()
            if which is ours_run:
                t_ours_all.append(t)
                res = out
            else:
                t_ref_all.append(t)
                adv = out
    t_ours, t_ref = statistics.median(t_ours_all), statistics.median(t_ref_all)
    ours = {s.label: res.percent(s.label, args.eps) for s in res.specs}
    with torch.no_grad():
        theirs = 100.0 * float(((model(x).argmax(1) == y) & (model(adv).argmax(1) == y)).double().mean())
    clean = res.percent("none")

    env = environment("cpu")
    lines = [
        f"## Run of {time.strftime('%Y-%m-%d %H:%M')}: advgeom standard suite vs pyautoattack "
        "AutoAttack (standard)", "",
        f"Command: `python {' '.join(sys.argv)}`", "",
        f"Model: MLP 784-200-200-10, FGSM-RS adversarial training eps {args.eps}, "
        f"{args.train_steps} Adam steps; {args.points} MNIST test points (7000-); linf eps {args.eps}; "
        f"{args.threads} thread(s); {args.repeats} repeat(s), alternating order, medians.", "",
        "| quantity | advgeom | pyautoattack |", "|---|---|---|",
        f"| clean accuracy | {clean:.2f} | - |",
        *(f"| after {k} | {v:.2f} | - |" for k, v in ours.items()),
        f"| robust accuracy (standard) | {res.percent('worst_case', args.eps):.2f} | {theirs:.2f} |",
        f"| wall time (s), median | {t_ours:.1f} | {t_ref:.1f} |",
        f"| wall times (s), each run | {', '.join(f'{t:.1f}' for t in t_ours_all)} | "
        f"{', '.join(f'{t:.1f}' for t in t_ref_all)} |",
        f"| time ratio advgeom / pyautoattack | {t_ours / t_ref:.2f} | |", "",
        f"Difference: {res.percent('worst_case', args.eps) - theirs:+.2f} points "
        "(criterion: within 0.5).", "",
        "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("# advgeom standard suite vs pyautoattack AutoAttack (standard)\n\n"
                       "Runs are appended, newest last.\n\n")
    with out.open("a") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
