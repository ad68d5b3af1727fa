"""GPU smoke check (issue 27): on one CUDA GPU, in under 8 minutes, run the GPU-only tests
(``tests/gpu``: device placement, an attack against its CPU output, AMP, channels_last) and
measure, on a small CNN with its initial weights and random inputs,

  - PGD throughput (20 steps, no early stop) of advgeom against ``torchattacks.PGD``,
  - the standard suite (APGD-CE, APGD-T, FAB-T, Square) against pyautoattack's
    AutoAttack "standard" on a small set (time and robust accuracy),
  - a PGD-AT training step with k crafting steps against its budget, k + 1 natural steps,

then print one table. Without CUDA it prints one line saying so and exits 0. A part whose
reference is not installed, or that fails, gets a row saying so (the others still run).

    python benchmarks/gpu_smoke.py                  # everything, under 8 minutes
    python benchmarks/gpu_smoke.py --skip-tests     # the measurements only
"""
from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255
NO_CUDA = "gpu_smoke: no CUDA device here; nothing to run (run it on a machine with a GPU)"


def small_cnn(device: torch.device) -> nn.Module:
    """A CIFAR-shaped CNN (two convolutions, one linear layer), seeded initial weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 8 * 8, 10)).to(device).eval()


def points(n: int, model: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images labelled with the model's own predictions (every point starts correct)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 32, 32, generator=g).to(device)
    with torch.no_grad():
        return x, model(x).argmax(1)


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls after one warm-up, with the GPU synchronised."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def run_tests(timeout: int) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", str(ROOT / "tests" / "gpu")]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ["GPU tests (tests/gpu)", "timed out", f"> {timeout} s", ""]
    last = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
    if out.returncode != 0:            # what failed, before the table
        print(out.stdout[-4000:], out.stderr[-2000:], sep="\n", file=sys.stderr)
    return ["GPU tests (tests/gpu)", "pass" if out.returncode == 0 else "FAIL", last, ""]


def pgd_rows(device: torch.device, batch: int, steps: int) -> list[list[str]]:
    from advgeom.attacks.pgd import pgd

    model = small_cnn(device)
    x, y = points(batch, model, device)
    ours = timed(lambda: pgd(model, x, y, eps=EPS, steps=steps, step_size=2 / 255, early_stop=False))
    rows = [["PGD advgeom", f"{batch * steps / ours:,.0f} img-steps/s", f"{ours * 1e3:.1f} ms", ""]]
    try:
        import torchattacks
    except ImportError:
        return rows + [["PGD torchattacks", "not installed", "", ""]]
    ta = torchattacks.PGD(model, eps=EPS, alpha=2 / 255, steps=steps, random_start=True)
    ref = timed(lambda: ta(x, y))
    return rows + [["PGD torchattacks", f"{batch * steps / ref:,.0f} img-steps/s", f"{ref * 1e3:.1f} ms",
                    f"advgeom / torchattacks time {ours / ref:.2f}"]]


def suite_rows(device: torch.device, n: int) -> list[list[str]]:
    from advgeom.eval.suite import standard_suite

    model = small_cnn(device)
    x, y = points(n, model, device)
    t0 = time.perf_counter()
    res = standard_suite(model, (x, y), [EPS], batch_size=n, progress=False, checks=False)
    torch.cuda.synchronize()
    ours = time.perf_counter() - t0
    rows = [["standard suite advgeom", f"{res.accuracy('worst_case', EPS):.1f}% robust", f"{ours:.1f} s",
             f"{n} points"]]
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        return rows + [["standard suite pyautoattack", "not installed", "", ""]]
    aa = AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0, device=str(device))
    t0 = time.perf_counter()
    adv = aa.run_standard_evaluation(x, y, batch_size=n)
    adv = adv[0] if isinstance(adv, tuple) else adv
    torch.cuda.synchronize()
    ref = time.perf_counter() - t0
    with torch.no_grad():
        acc = 100.0 * float((model(adv.to(device)).argmax(1) == y).double().mean())
    return rows + [["standard suite pyautoattack", f"{acc:.1f}% robust", f"{ref:.1f} s",
                    f"advgeom / pyautoattack time {ours / ref:.2f}"]]


def at_rows(device: torch.device, batch: int, k: int) -> list[list[str]]:
    from advgeom.defenses.adversarial import pgd_at
    from advgeom.defenses.base import StepContext, split_loss

    model = small_cnn(device)
    x, y = points(batch, model, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    objective = pgd_at(eps=EPS, attack=f"pgd:steps={k},step_size={2 / 255},early_stop=false")
    gen = torch.Generator(device=device).manual_seed(0)
    step = {"context": StepContext()} if "context" in inspect.signature(objective).parameters else {}

    def natural() -> None:
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def adversarial() -> None:
        model.train()
        opt.zero_grad()
        split_loss(objective(model, x, y, generator=gen, **step))[0].backward()
        opt.step()

    t_nat, t_at = timed(natural), timed(adversarial)
    return [["AT step natural", f"{t_nat * 1e3:.1f} ms", f"batch {batch}", ""],
            [f"AT step PGD-AT k={k}", f"{t_at * 1e3:.1f} ms", f"budget {(k + 1) * t_nat * 1e3:.1f} ms",
             f"ratio to k+1 natural steps {t_at / ((k + 1) * t_nat):.2f}"]]


def guarded(name: str, fn: Callable[[], list[list[str]]]) -> list[list[str]]:
    try:
        return fn()
    except Exception as e:   # one failing part must not hide the others
        return [[name, "error", f"{type(e).__name__}: {e}"[:120], ""]]


def table(rows: list[list[str]]) -> str:
    head = ["measurement", "result", "time", "note"]
    width = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    def line(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, width)) + " |"
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in width) + "|", *map(line, rows)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-tests", action="store_true", help="do not run tests/gpu")
    ap.add_argument("--batch", type=int, default=1024, help="PGD and AT batch")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps")
    ap.add_argument("--suite-n", type=int, default=256, help="points of the standard-suite comparison")
    ap.add_argument("--k", type=int, default=10, help="crafting steps of the AT step")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    device = torch.device("cuda")
    t0 = time.perf_counter()
    rows = [] if args.skip_tests else [run_tests(timeout=180)]
    rows += guarded("PGD", lambda: pgd_rows(device, args.batch, args.steps))
    rows += guarded("AT step", lambda: at_rows(device, args.batch, args.k))
    rows += guarded("standard suite", lambda: suite_rows(device, args.suite_n))
    print(f"gpu_smoke on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
