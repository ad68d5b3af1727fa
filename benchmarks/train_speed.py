"""Cost of a training step on a CPU, and what each CPU option does to it (issues 10, 25).

For each model (``--models``; by default madry_mnist_cnn, small_cnn, fast_at_mnist_net)
on the first ``--batch`` MNIST training images it times, interleaved ``--repeats`` times,
one optimizer step (SGD) of
  - natural: the ``ce`` objective (forward, backward, update),
  - pgd_at:  ``pgd_at`` with ``k`` PGD steps (advgeom's ``pgd``, ``early_stop=false``),
  - trades:  ``trades`` with ``k`` KL-ascent steps,
under the plain path (fp32, NCHW, eager, the run's threads, crafting on the whole batch)
and under each CPU option alone:
  - channels_last: the model's weights in channels-last format (``TrainConfig.channels_last``),
  - threads=N:     ``torch.set_num_threads(N)`` around the step (1 vs the machine's cores),
  - bf16:          bf16 autocast as ``TrainConfig(precision="bf16")`` (not an fp32 option),
  - chunk=C:       the attack crafts the batch in chunks of C samples, then one training step,
  - compile:       ``torch.compile`` (inductor) as ``TrainConfig.compile`` applies it, alone
                   and with channels_last, in a child process under ``--compile-timeout``
                   (compiling, failing or timing out is reported in one line),
  - interop=1:     ``torch.set_num_interop_threads(1)`` against the default, two child processes,
then the best combination of the fp32 options that gained >= 2% on the pgd_at step with
the plain path's loss. Each option's times are compared with the plain path's in the same
process. The first step of every option starts from the same weights, batch and seeds:
its loss, gradients and weights after the step are compared with the plain path's
(max |dloss|, max |dgrad| / max |grad|, max |dw|; "same" within the tolerance the loop's
compile check uses).

The floor: the sustained fp32 rate of a ``--floor-n`` square matrix product on the same
threads. Each model's natural step is reported as its achieved rate (matmul/conv FLOPs of
one forward+backward counted by ``torch.utils.flop_counter.FlopCounterMode``) and as a
share of the floor.

    python benchmarks/train_speed.py --quick                      # < 1 min: madry, k = 2, no compile
    python benchmarks/train_speed.py --quick --compile-timeout 300  # ... with the compile child
    python benchmarks/train_speed.py                              # everything (about 15-20 min)
    python benchmarks/train_speed.py --models madry_mnist_cnn --k 10 --repeats 5
    python benchmarks/train_speed.py --out results/benchmarks/train_speed.md   # keep a record

The machine may be shared: compare medians (or minima) within one run; the load average
is printed with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from advgeom.data import load
from advgeom.defenses.adversarial import AdversarialSetup
from advgeom.defenses.base import StepContext, split_loss
from advgeom.registry import create
from advgeom.train.execution import GRAD_RTOL, LOSS_RTOL, compiled

from attack_speed import append_record, timed  # noqa: E402  (sibling benchmark script)

MODELS = ("madry_mnist_cnn", "small_cnn", "fast_at_mnist_net")
GAIN = 1.02     # an option enters the best combination when it is at least this much faster
WIDTH = 34      # of the option column


# ---------------------------------------------------------------------------
# the helpers other benchmarks share (spectral.py): one step, timing, ratio lines


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


# ---------------------------------------------------------------------------
# the options


@dataclass(frozen=True)
class Option:
    """One way of running the step; the defaults are the plain path."""

    name: str = "plain"
    channels_last: bool = False
    compile: bool = False
    threads: int = 0      # 0: the run's thread count
    bf16: bool = False
    chunk: int = 0        # crafting chunk size; 0: the whole batch
    only: tuple[str, ...] = ()   # the objectives to run (empty: all)


@contextmanager
def thread_count(n: int) -> Iterator[None]:
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def chunked_crafting(size: int) -> Iterator[None]:
    """Every adversarial defense crafts its examples ``size`` samples at a time (the same
    generator, drawn chunk after chunk), then trains on the whole batch."""
    if not size:
        yield
        return
    whole = AdversarialSetup.craft

    def craft(self, model, x, y, generator, context, own=None):
        parts = [whole(self, model, xc, yc, generator, context, own)
                 for xc, yc in zip(x.split(size), y.split(size))]
        return torch.cat(parts)

    AdversarialSetup.craft = craft
    try:
        yield
    finally:
        AdversarialSetup.craft = whole


def objectives(names: list[str], k: int) -> dict:
    made = {"natural": lambda: create("defense", "ce"),
            "pgd_at": lambda: create("defense", "pgd_at", eps=0.3,
                                     attack=f"pgd:steps={k},step_size=0.01,early_stop=false"),
            "trades": lambda: create("defense", "trades", eps=0.3, steps=k, step_size=0.01)}
    return {n: made[n]() for n in names}


def start_weights(model_name: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Seeded initial weights after 3 natural Adam steps on the batch (every model then
    has non-zero input gradients: small_cnn's classifier starts at zero)."""
    torch.manual_seed(0)
    model = create("model", model_name).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Runner:
    """One option's model, optimizer and step on one objective."""

    def __init__(self, opt_: Option, model_name: str, objective, state: dict, x, y) -> None:
        self.o, self.objective, self.x, self.y = opt_, objective, x, y
        self.model = create("model", model_name)
        self.model.load_state_dict(state)
        self.model.train()
        if opt_.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.call = compiled(self.model) if opt_.compile else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-2, momentum=0.9)

    def step(self, keep: bool = False):
        o = self.o
        with thread_count(o.threads):
            torch.manual_seed(3)    # dropout (small_cnn): the same masks for every option
            g = torch.Generator().manual_seed(1)
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if o.bf16 else nullcontext()
            with chunked_crafting(o.chunk), amp:
                loss, _ = split_loss(self.objective(self.call, self.x, self.y, generator=g,
                                                    context=StepContext(0, 0, 10, 10)))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad.detach().clone() for p in self.model.parameters()] if keep else None
            self.opt.step()
        if keep:
            return (float(loss.detach()), grads,
                    [p.detach().clone() for p in self.model.parameters()])
        return None


def difference(ref, got) -> dict[str, float]:
    """max |dloss|, max |dgrad| / max |grad| and max |dw| of a first step against the plain one."""
    (l0, g0, w0), (l1, g1, w1) = ref, got
    scale = max(float(g.abs().max()) for g in g0) or 1.0
    return {"loss": abs(l1 - l0), "loss_ref": l0,
            "grad": max(float((a - b).abs().max()) for a, b in zip(g0, g1)) / scale,
            "w": max(float((a - b).abs().max()) for a, b in zip(w0, w1))}


def measure(model_name: str, options: list[Option], names: list[str], k: int, repeats: int,
            x: torch.Tensor, y: torch.Tensor, state: dict) -> dict:
    """Time every (option, objective) step interleaved, after a first step that is compared
    with the plain option's (the first of ``options`` must be plain)."""
    objs = objectives(names, k)
    runners, out = {}, {"times": {}, "first_s": {}, "diff": {}, "errors": {}}
    for o in options:
        try:
            firsts = {}
            for n, obj in objs.items():
                if o.only and n not in o.only:
                    continue
                r = Runner(o, model_name, obj, state, x, y)
                t = time.perf_counter()
                firsts[n] = r.step(keep=True)
                out["first_s"].setdefault(o.name, {})[n] = time.perf_counter() - t
                if o.compile:
                    r.step()   # settle (a recompile)
                runners[(o.name, n)] = r
            if o.name == "plain":
                plain_first = firsts
            out["diff"][o.name] = {n: difference(plain_first[n], firsts[n]) for n in firsts}
        except Exception as e:  # noqa: BLE001 - an option that fails is reported and skipped
            out["errors"][o.name] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            runners = {key: r for key, r in runners.items() if key[0] != o.name}
    for _ in range(repeats):
        for (oname, n), r in runners.items():
            out["times"].setdefault(oname, {}).setdefault(n, []).append(timed(r.step, x.device)[0])
    return out


# ---------------------------------------------------------------------------
# child processes: compile (a time limit) and interop threads (set once per process)


def in_child(args: argparse.Namespace, model_name: str, options: list[Option], names: list[str],
             x, y, state, timeout: float, interop: int = 0) -> tuple[dict | None, str]:
    """``measure`` in a fresh process; (result, '') or (None, why not)."""
    with tempfile.TemporaryDirectory() as d:
        payload = Path(d) / "payload.pt"
        torch.save({"x": x, "y": y, "state": state}, payload)
        spec = {"model": model_name, "options": [asdict(o) for o in options], "names": names,
                "k": args.k, "repeats": args.repeats, "threads": torch.get_num_threads(),
                "interop": interop, "payload": str(payload)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"did not finish within {timeout:g} s (--compile-timeout)"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:]), ""
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return None, f"failed (exit {proc.returncode}): {tail[-1][:200] if tail else 'no output'}"


def child_main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    if spec["interop"]:
        torch.set_num_interop_threads(spec["interop"])
    torch.set_num_threads(spec["threads"])
    data = torch.load(spec["payload"], weights_only=True)
    options = [Option(**{**o, "only": tuple(o["only"])}) for o in spec["options"]]
    out = measure(spec["model"], options, spec["names"], spec["k"], spec["repeats"],
                  data["x"], data["y"], data["state"])
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------
# the floor and the FLOPs


def matmul_floor(n: int, repeats: int, threads: int) -> float:
    """Sustained fp32 FLOP/s of an n x n @ n x n product (best of ``repeats``)."""
    with thread_count(threads):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = min(timed(lambda: a @ b, torch.device("cpu"))[0] for _ in range(repeats))
    return 2.0 * n ** 3 / best


def natural_flops(model_name: str, state: dict, x, y) -> float:
    """Matmul/conv FLOPs of one natural forward + backward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create("model", model_name)
    model.load_state_dict(state)
    model.train()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------
# the report


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def same(d: dict) -> bool:
    return d["loss"] <= LOSS_RTOL * max(1.0, abs(d["loss_ref"])) and d["grad"] <= GRAD_RTOL


def rows(result: dict, names: list[str], tag: str = "", base: dict | None = None) -> list[str]:
    """One line per option: median ms per objective, speedup against the plain path of
    the same process (median), and the first-step differences."""
    base = base or result["times"].get("plain", {})
    lines = []
    for oname, times in result["times"].items():
        ms = "".join(f"{med(times[n]) * 1e3:11.1f}" if n in times else f"{'-':>11s}" for n in names)
        up = "".join(f"{med(base[n]) / med(times[n]):6.2f}" if n in times and n in base
                     else f"{'-':>6s}" for n in names)
        diffs = result["diff"].get(oname, {})
        if oname == "plain" and base is result["times"].get("plain"):
            eq = "(reference)"
        elif not diffs:
            eq = "(not compared)"
        else:
            worst = {key: max(d[key] for d in diffs.values()) for key in ("loss", "grad", "w")}
            verdict = ("same" if all(same(d) for d in diffs.values())
                       else "differs" if "bf16" in oname else "DIFFERS")   # bf16: by design
            eq = (f"{verdict:7s} {worst['loss']:8.1e} {worst['grad']:8.1e} {worst['w']:8.1e}")
        first = max(result["first_s"].get(oname, {}).values(), default=0.0)
        lines.append(f"  {oname + tag:{WIDTH}s}{ms}  {up:{6 * len(names)}s}   {eq}   {first:5.1f}")
    for oname, err in result["errors"].items():
        lines.append(f"  {oname + tag:{WIDTH}s} failed: {err}")
    return lines


def speedups(result: dict, target: str) -> dict[str, float]:
    """Median speedup on ``target`` of each option the same as plain (fp32 only)."""
    base = result["times"].get("plain", {}).get(target)
    out = {}
    for oname, times in result["times"].items():
        diffs = result["diff"].get(oname, {})
        if oname != "plain" and base and target in times and diffs and all(same(d) for d in diffs.values()):
            out[oname] = med(base) / med(times[target])
    return out


def best_option(gains: dict[str, float], options: dict[str, Option]) -> Option | None:
    """The fp32 options that gained at least ``GAIN``, the best one per kind, combined."""
    chosen: dict[str, tuple[float, Option]] = {}
    for name, up in gains.items():
        o = options.get(name)
        if o is None or o.bf16 or up < GAIN:
            continue
        for kind, on in (("channels_last", o.channels_last), ("compile", o.compile),
                         ("threads", o.threads), ("chunk", o.chunk)):
            if on and (kind not in chosen or up > chosen[kind][0]):
                chosen[kind] = (up, o)
    if not chosen:
        return None
    combo = Option(name="best: " + " + ".join(sorted({o.name for _, o in chosen.values()})))
    for kind, (_, o) in chosen.items():
        combo = replace(combo, **{kind: getattr(o, kind)})
    return combo


INTEROP_ROUNDS = 3      # alternating child pairs for the interop comparison


def emit(lines: list[str], new: list[str]) -> None:
    """Keep ``new`` for the record and print it now (a long run shows its progress)."""
    lines += new
    print("\n".join(new), flush=True)


def study(args: argparse.Namespace, model_name: str, x, y, floor: dict[int, float]) -> list[str]:
    """Every option on one model; the report's lines."""
    names = ["natural", "pgd_at"] if args.quick else ["natural", "pgd_at", "trades"]
    target = "pgd_at"
    state = start_weights(model_name, x, y)
    base_threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    opts = [Option(), Option("channels_last", channels_last=True)]
    opts += [Option(f"threads={t}", threads=t) for t in sorted({1, cores}) if t != base_threads]
    # bf16 is emulated (slow) on CPUs without AVX512-BF16/AMX: --quick times its natural step only
    opts += [Option("bf16", bf16=True, only=("natural",) if args.quick else ())]
    chunks = [args.batch // 2] if args.quick else [args.batch // 4, args.batch // 2]
    opts += [Option(f"chunk={c}", chunk=c) for c in chunks if 0 < c < args.batch]
    by_name = {o.name: o for o in opts}
    flops = natural_flops(model_name, state, x, y)
    lines: list[str] = []
    head = (f"  {'option':{WIDTH}s}" + "".join(f"{n + ' ms':>11s}" for n in names)
            + f"  {'x plain (median)':>{6 * len(names)}s}   {'1st step':7s} {'|dloss|':>8s} {'dgrad/g':>8s}"
            + f" {'|dw|':>8s}"
            + "   1st s")
    emit(lines, [f"\n {model_name}: batch {args.batch}, k = {args.k}, {base_threads} threads, "
                 f"{args.repeats} repeats; natural step {flops / 1e9:.2f} GFLOP "
                 f"({flops / args.batch / 1e6:.1f} MFLOP/sample, FlopCounterMode)", head])
    res = measure(model_name, opts, names, args.k, args.repeats, x, y, state)
    emit(lines, rows(res, names))
    gains = speedups(res, target)

    if args.compile_timeout > 0:
        copts = [Option(), Option("compile", compile=True),
                 Option("compile+channels_last", compile=True, channels_last=True)]
        by_name.update({o.name: o for o in copts[1:]})
        t = time.perf_counter()
        cres, why = in_child(args, model_name, copts, names, x, y, state, args.compile_timeout)
        if cres is None:
            emit(lines, [f"  compile: {why}; skipped"])
        else:
            emit(lines, rows(cres, names, tag=" [child]")
                 + [f"  (compile child: {time.perf_counter() - t:.0f} s in all, compiling "
                    f"included; its own plain path is the reference of its rows)"])
            gains.update(speedups(cres, target))
    else:
        emit(lines, ["  compile: skipped (--compile-timeout 0; --quick skips it unless given)"])

    if not args.quick:
        # the interop setting is per process: children alternate (1, default) over
        # INTEROP_ROUNDS rounds and their times are pooled, so load drift hits both alike
        got: dict[int, dict[str, list[float]]] = {1: {}, 0: {}}
        why = ""
        for _ in range(INTEROP_ROUNDS):
            for n in (1, 0):
                res_n, why = in_child(args, model_name, [Option()], names, x, y, state, 600, interop=n)
                if res_n is None:
                    break
                for obj, ts in res_n["times"]["plain"].items():
                    got[n].setdefault(obj, []).extend(ts)
            if why:
                break
        if why:
            emit(lines, [f"  interop: {why}"])
        else:
            one = {"times": {"interop=1": got[1]}, "diff": {}, "first_s": {}, "errors": {}}
            note = (f"   (against default interop {torch.get_num_interop_threads()}: "
                    f"{INTEROP_ROUNDS} alternating rounds of child pairs, pooled)")
            emit(lines, [ln + note for ln in rows(one, names, " [child]", got[0])])
    else:
        emit(lines, ["  interop: skipped in --quick"])

    combo = best_option(gains, by_name)
    if combo is None:
        emit(lines, [f"  best combination: the plain path (no fp32 option gained {GAIN - 1:.0%} "
                     f"on {target} with the plain loss)"])
    elif combo.name[6:] in by_name:
        emit(lines, [f"  best combination: {combo.name[6:]} alone (measured above)"])
    else:
        if combo.compile:
            bres, why = in_child(args, model_name, [Option(), combo], names, x, y, state,
                                 args.compile_timeout)
        else:
            bres, why = measure(model_name, [Option(), combo], names, args.k, args.repeats, x, y, state), ""
        if bres is None:
            emit(lines, [f"  {combo.name}: {why}"])
        else:
            bres["times"] = {("best" if n == combo.name else n): v for n, v in bres["times"].items()}
            bres["diff"] = {("best" if n == combo.name else n): v for n, v in bres["diff"].items()}
            bres["first_s"] = {}
            emit(lines, [f"  best combination: {combo.name[6:]} (against the plain path of its own "
                         f"trial{', a child' if combo.compile else ''}):"]
                 + [ln for ln in rows(bres, names) if ln.startswith("  best ")])

    t_nat = med(res["times"]["plain"]["natural"])
    fl = floor[base_threads]
    out = [f"  floor: plain natural step {flops / t_nat / 1e9:.1f} GFLOP/s = {flops / t_nat / fl:.2f} "
           f"of the {fl / 1e9:.1f} GFLOP/s matmul floor on {base_threads} threads "
           f"({t_nat / (flops / fl):.2f}x the floor's time)"]
    for oname, times in res["times"].items():
        t = int(oname.split("=")[1]) if oname.startswith("threads=") else 0
        if t in floor:
            r = flops / med(times["natural"])
            out.append(f"  floor: {oname} natural step {r / 1e9:.1f} GFLOP/s = {r / floor[t]:.2f} of "
                       f"the {floor[t] / 1e9:.1f} GFLOP/s floor on {t} thread{'s' * (t > 1)}")
    plain = res["times"]["plain"]
    out += [ratio_line(plain, n, budget, 1.05) for n, budget in (("pgd_at", args.k + 1),
                                                                  ("trades", args.k + 2)) if n in plain]
    steps = 50000 // args.batch
    out.append(f"  a PGD-AT epoch (50k images, {steps} steps, k = {args.k}): "
               f"{steps * med(plain['pgd_at']) / 60:.1f} min on the plain path")
    emit(lines, out)
    return lines


def main() -> None:
    if "--child" in sys.argv:
        return child_main(sys.argv[sys.argv.index("--child") + 1])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated registered models")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--k", type=int, default=None, help="crafting steps (default 10; --quick 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; --quick 2)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the plain path (0: as is)")
    ap.add_argument("--floor-n", type=int, default=None, help="matrix size of the floor (2048; --quick 1024)")
    ap.add_argument("--compile-timeout", type=float, default=None,
                    help="seconds for the compile child per model (default 900; --quick 0: skip)")
    ap.add_argument("--quick", action="store_true",
                    help="madry_mnist_cnn, k = 2, 2 repeats, natural and pgd_at (bf16: natural), "
                         "no compile or interop")
    ap.add_argument("--out", type=Path, default=None, help="append the run to this Markdown file")
    args = ap.parse_args()
    q = args.quick
    args.k = args.k if args.k is not None else (2 if q else 10)
    args.repeats = args.repeats if args.repeats is not None else (2 if q else 5)
    args.floor_n = args.floor_n or (1024 if q else 2048)
    args.compile_timeout = args.compile_timeout if args.compile_timeout is not None else (0 if q else 900)
    models = [MODELS[0]] if q and args.models == ",".join(MODELS) else args.models.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load("mnist", "train")
    x, y = data.images[: args.batch].contiguous(), data.labels[: args.batch].contiguous()
    threads = sorted({1, torch.get_num_threads(), os.cpu_count() or 1})
    floor = {t: matmul_floor(args.floor_n, 3, t) for t in threads}
    lines = [f" CPU training speed, torch {torch.__version__}, {torch.get_num_threads()} threads "
             f"({os.cpu_count()} cores), load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
             " floor: " + ", ".join(f"{t} thread{'s' * (t > 1)} {floor[t] / 1e9:.1f} GFLOP/s"
                                    for t in threads)
             + f" ({args.floor_n}^3 fp32 matmul, best of 3)"]
    print("\n".join(lines), flush=True)
    for m in models:
        lines += study(args, m, x, y, floor)
    lines.append(f" load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
                 f"{time.perf_counter() - t0:.0f} s in all")
    print("\n".join(["", "=" * 30, *lines]))
    if args.out is not None:
        append_record(args.out, lines, torch.device("cpu"))


if __name__ == "__main__":
    main()
