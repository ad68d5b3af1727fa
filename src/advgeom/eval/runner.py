"""Robustness evaluation: every attack at every eps on every sample, the per-sample
worst case over attacks, rejection-aware metrics, sanity checks, and batch-level
resumability through the results store (DESIGN.md "Evaluating robustness honestly").

Units of work are (batch, attack, eps) plus one clean unit per batch. Each finished
unit's per-sample outcome is stored atomically (``ResultStore.finish_unit``) under a
key made of the model's weights hash, the data hash, the batch, the attack spec, eps,
norm and seed; a rerun with the same store skips finished units, and a killed run
loses at most the unit in flight. Attack randomness comes from a generator seeded by
(seed, batch index, attack, eps, norm), so a resumed run reproduces an uninterrupted
one exactly.
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from advgeom.attacks._losses import margin_loss, success_margin
from advgeom.distributed import all_gather_objects, world
from advgeom.errors import AdvgeomError
from advgeom.eval import checks as C
from advgeom.eval.bookkeeping import (HookCounter, percent, state_hash, tensor_hash, text_hash,
                                      unit_seed)
from advgeom.eval.rejection import (adversarial_rejection_metrics, can_reject,
                                    clean_rejection_metrics, defended, predict, scores)
from advgeom.eval.spec import AttackSpec, parse_attack_spec, parse_attacks, parse_eps
from advgeom.logits import predicted_class, two_logits
from advgeom.progress import progress_bar
from advgeom.results.env import environment
from advgeom.results.rows import Row
from advgeom.results.store import ResultStore
from advgeom.seeding import make_generator
from advgeom.types import check_inputs, check_model_dtype

NORMS = ("linf", "l2")
WORST = "worst_case"


@dataclass
class EvalResult:
    """Rows, the check report and the per-sample outcomes of one evaluation."""

    rows: list[Row]
    checks: C.CheckReport
    specs: list[AttackSpec]
    eps: list[float]
    norm: str
    n: int
    clean_correct: Tensor                                   # (n,) bool
    robust: dict[tuple[str, float], Tensor]                 # (attack label | worst_case, eps) -> (n,) bool
    clean_accept: Tensor | None = None                      # rejecting models only
    adv_accept: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    units_run: int = 0
    units_skipped: int = 0
    figures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checks.ok

    def value(self, metric: str, attack: str = WORST, eps: float = 0.0) -> float:
        """The value of one row (``metric``, ``attack``, ``eps``)."""
        for r in self.rows:
            if r.metric == metric and r.attack == attack and math.isclose(r.eps, eps):
                return r.value
        raise KeyError((metric, attack, eps))

    def accuracy(self, attack: str = WORST, eps: float | None = None) -> float:
        """Clean accuracy (``attack="none"``) or robust accuracy of ``attack`` at ``eps``."""
        if attack == "none":
            return self.value("clean_accuracy", "none", 0.0)
        return self.value("robust_accuracy", attack, self.eps[-1] if eps is None else eps)


# ---------------------------------------------------------------------------
# helpers


def _check_readable(model: nn.Module, x1: Tensor) -> None:
    """One clear error when the model cannot take these inputs (another input shape)."""
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape and tuple(x1.shape[1:]) != shape:
        raise AdvgeomError(f"the model takes inputs of shape {shape}, the data has {tuple(x1.shape[1:])}")
    try:
        with torch.no_grad():
            model(x1)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdvgeomError(f"the model cannot read inputs of shape {tuple(x1.shape[1:])}: {first}") from None


def _unpack(data: Any, n: int | None) -> tuple[Tensor, Tensor, int | None, str]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        x, y, k, name = data.images, data.labels, getattr(data, "num_classes", None), getattr(data, "name", "")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        (x, y), k, name = data, None, ""
    else:
        raise AdvgeomError("data must be a TensorData or an (inputs, labels) pair")
    if n is not None:
        if n <= 0:
            raise AdvgeomError(f"n must be positive, got {n}")
        x, y = x[:n], y[:n]
    return x, y, k, name


def _device(model: nn.Module, x: Tensor) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else x.device


def _bools(t: Tensor | None) -> list[bool] | None:
    return None if t is None else [bool(v) for v in t.cpu()]


def _tensor(v: list[bool] | None) -> Tensor | None:
    return None if v is None else torch.tensor(v, dtype=torch.bool)


def unbounded_eps(norm: str, inputs: Tensor) -> float:
    """An eps whose ball contains all of [0,1]^d (1 for linf, sqrt(d) for l2)."""
    return 1.0 if norm == "linf" else math.sqrt(inputs[0].numel())


# ---------------------------------------------------------------------------
# units


class _Units:
    """Runs units of work, reusing stored payloads when a store is given; with
    ``write=False`` (ranks other than 0) finished units are kept in :attr:`fresh` for
    rank 0 to store instead of being written."""

    def __init__(self, store: ResultStore | None, bar: Any, write: bool = True) -> None:
        self.store, self.bar, self.run, self.skipped = store, bar, 0, 0
        self.write = write
        self.fresh: list[tuple[str, Any]] = []

    def __call__(self, key: str, compute: Any, tick: bool = True) -> dict[str, Any]:
        payload = self.store.unit(key) if self.store is not None else None
        if payload is None:
            payload = compute()
            if self.store is not None and self.write:
                self.store.finish_unit(key, payload, [])
            self.fresh.append((key, payload))
            self.run += 1
        else:
            self.skipped += 1
        if self.bar is not None and tick:
            self.bar.update(1)
        return payload


def _clean_unit(model: nn.Module, xb: Tensor, yb: Tensor) -> dict[str, Any]:
    pred, accept = predict(model, xb)
    return {"correct": _bools(pred == yb), "accept": _bools(accept)}


def _attack_unit(model: nn.Module, spec: AttackSpec, xb: Tensor, yb: Tensor, clean: dict[str, Any],
                 eps: float, norm: str, seed: int, alive: Tensor | None = None,
                 amp: bool = False) -> dict[str, Any]:
    """Attack the clean-correct samples of a batch (``alive``: only those) and score
    every returned adversarial again here, in this batch, whatever batch the attack
    used: the stored outcome is the evaluator's verdict, not the attack's. ``fragile``
    counts attacked samples whose scored logit margin is within
    :func:`~advgeom.attacks._losses.success_margin` of the boundary (either side).
    ``amp``: the attack's forward passes run under bf16 autocast (its inputs, input
    gradients and projections stay float32); scoring is always float32."""
    target = _tensor(clean["correct"]).to(xb.device)
    if alive is not None:
        target = target & alive.to(xb.device)
    idx = target.nonzero().flatten()
    adv = xb.clone()
    stats = {"max_norm": 0.0, "min_value": 0.0, "max_value": 1.0, "finite": True}
    fw = bw = 0
    if idx.numel():
        gen = make_generator(unit_seed(seed, spec.fingerprint(), float(eps), norm), xb.device)
        kwargs = spec.call_kwargs()
        with HookCounter(model) as pc:
            if spec.accepts("counter"):  # the attack counts its own passes
                from advgeom.attacks.base import PassCounter

                pc = kwargs["counter"] = PassCounter()
            with torch.autocast(xb.device.type, dtype=torch.bfloat16) if amp else nullcontext():
                out = spec.fn(model, xb[idx], yb[idx], eps=eps, norm=norm, generator=gen, **kwargs)
        if not isinstance(out, Tensor):
            raise AdvgeomError(f"attack {spec.label!r} returned {type(out).__name__}, not a tensor")
        stats = C.threat_model_stats(xb[idx], out, eps, norm)
        adv[idx] = out.detach().to(adv.dtype)
        fw, bw = pc.forwards, pc.backwards
    logits, adv_accept = scores(model, torch.nan_to_num(adv, nan=0.0))
    z = two_logits(logits)
    fragile = (margin_loss(z, yb).abs() <= success_margin(z))[idx]
    return {"correct": _bools(predicted_class(z) == yb), "accept": _bools(adv_accept),
            "stats": stats, "forwards": fw, "backwards": bw, "attacked": int(idx.numel()),
            "fragile": int(fragile.sum())}


def monotone_in_eps(outcomes: dict[float, Tensor]) -> tuple[dict[float, Tensor], dict[float, int]]:
    """Per sample, an adversarial found at eps1 also counts at every larger eps (it lies
    in the larger ball of the same norm): ``robust[e] &= robust[e']`` for all ``e' < e``.
    Returns the corrected outcomes and, per eps, how many samples it changed."""
    fixed, changed, running = {}, {}, None
    for e in sorted(outcomes):
        raw = outcomes[e]
        fixed[e] = raw if running is None else raw & running
        changed[e] = int((raw & ~fixed[e]).sum())
        running = fixed[e]
    return fixed, changed


# ---------------------------------------------------------------------------
# evaluate


def evaluate(model: nn.Module, data: Any, attacks: str | AttackSpec | Iterable[str | AttackSpec],
             eps: str | float | Iterable[float], *, norm: str = "linf", batch_size: int = 256,
             n: int | None = None, store: ResultStore | None = None, experiment: str = "adhoc",
             model_name: str | None = None, defense: str = "none", dataset: str | None = None,
             profile: str = "", seed: int = 0, checks: bool = True, strict: bool = False,
             check_config: C.CheckConfig = C.CheckConfig(), progress: bool = True,
             cascade: bool = False, amp: bool = False) -> EvalResult:
    """Evaluate ``model`` on ``data`` (TensorData or ``(x, y)``, first ``n`` samples)
    against every attack at every eps; returns tidy rows (clean accuracy, robust
    accuracy per attack and eps, the per-sample ``worst_case`` over attacks, pass
    counts, rejection metrics for models that can abstain) and a check report.

    Per sample, an adversarial found at a smaller eps counts at every larger one.
    With ``cascade`` (the standard suite), the attacks run in the given order, each on
    the points every earlier attack left robust at that eps; an attack's row is then
    the robust accuracy after it and all earlier ones (AutoAttack's protocol).

    Batches are moved to the model's device. With ``store``, finished units are
    reused and the rows written at the end; ``strict=True`` raises
    :class:`~advgeom.eval.checks.CheckError` when a check fails (after storing).
    A failed check names the numbers it concerns in their rows (``extra["failed_checks"]``)
    and the printed tables mark them. ``amp``: attacks run under bf16 autocast (a GPU
    speed-up; the evaluator still scores every adversarial in float32).

    Under torchrun (:mod:`advgeom.distributed`) every rank calls ``evaluate`` with the
    same arguments: batch ``b`` is attacked by rank ``b % world size`` with the seeds of
    a single-process run, the outcomes are gathered on every rank after each round of
    batches, and rank 0 alone stores units and rows and runs the sanity checks (other
    ranks return the same rows with an empty check report).
    """
    if norm not in NORMS:
        raise AdvgeomError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if batch_size <= 0:
        raise AdvgeomError(f"batch_size must be positive, got {batch_size}")
    specs, eps_list = parse_attacks(attacks), parse_eps(eps)
    x, y, num_classes, data_name = _unpack(data, n)
    check_inputs(x, y, num_classes or getattr(model, "num_classes", None))
    check_model_dtype(model, x)
    if model.training:
        raise AdvgeomError("model is in training mode: call model.eval() before evaluating")
    device = _device(model, x)
    _check_readable(model, x[:1].to(device))
    model_name = model_name or type(model).__name__
    rejecting = can_reject(model)
    if cascade and rejecting:
        raise AdvgeomError("the cascade (standard suite) attacks the class only; a model that can "
                           "reject needs every attack on every point: evaluate without --suite")
    hash_before = state_hash(model)
    data_fp = tensor_hash(x, y)
    w = world()
    if store is not None and store.run_id is None and w.main:
        store.start_run("evaluate", environment(device))

    starts = list(range(0, len(y), batch_size))
    mine = [b for b in range(len(starts)) if b % w.size == w.rank]
    bar = progress_bar(len(mine) * (1 + len(specs) * len(eps_list)), f"evaluate {model_name}",
                       enabled=progress and w.main)
    units = _Units(store, bar, write=w.main)

    def run_batch(b: int) -> tuple[dict[str, Any], dict[tuple[str, float], dict[str, Any]]]:
        s0 = starts[b]
        xb, yb = x[s0:s0 + batch_size].to(device), y[s0:s0 + batch_size].to(device)
        base = (hash_before, data_fp, batch_size, b)
        clean = units(text_hash("clean", *base), lambda: _clean_unit(model, xb, yb))
        out: dict[tuple[str, float], dict[str, Any]] = {}
        for e in eps_list:
            alive: Tensor | None = None
            chain: list[str] = []   # cascade: the attacks run before, in order
            for spec in specs:
                key = text_hash("attack", *base, spec.fingerprint(), e, norm, seed,
                                *(("cascade", *chain) if cascade else ()), *(("amp",) if amp else ()))
                p = out[(spec.label, e)] = units(key, lambda: _attack_unit(
                    model, spec, xb, yb, clean, e, norm, unit_seed(seed, b), alive, amp))
                if cascade:
                    chain.append(spec.fingerprint())
                    now = _tensor(p["correct"])
                    alive = now if alive is None else alive & now
        return clean, out

    done: dict[int, tuple[dict[str, Any], dict[tuple[str, float], dict[str, Any]]]] = {}
    try:
        for r0 in range(0, len(starts), w.size):   # one round: a batch per rank
            b = r0 + w.rank
            units.fresh = []
            got = run_batch(b) if b < len(starts) else None
            if not w.distributed:
                done[b] = got
                continue
            for rank, item in enumerate(all_gather_objects((got, units.fresh))):
                if item[0] is not None:
                    done[r0 + rank] = item[0]
                if w.main and rank != w.rank and store is not None:
                    for key, payload in item[1]:   # other ranks' work, stored by rank 0
                        store.finish_unit(key, payload, [])
    finally:
        bar.close()
    clean_p = [done[b][0] for b in range(len(starts))]
    adv_p = {(s.label, e): [done[b][1][(s.label, e)] for b in range(len(starts))]
             for s in specs for e in eps_list}

    # -- per-sample outcomes --------------------------------------------------
    cat = lambda ps, k: torch.cat([_tensor(p[k]) for p in ps])  # noqa: E731
    clean_correct = cat(clean_p, "correct")
    clean_accept = cat(clean_p, "accept") if rejecting else None
    robust: dict[tuple[str, float], Tensor] = {}
    adv_accept: dict[tuple[str, float], Tensor] = {}
    defended_rej: dict[tuple[str, float], Tensor] = {}
    rescued: dict[tuple[str, float], int] = {}
    prev_label: str | None = None
    for spec in specs:
        raw = {e: clean_correct & cat(adv_p[(spec.label, e)], "correct") for e in eps_list}
        if cascade and prev_label is not None:  # cumulative: after this attack and the earlier ones
            raw = {e: raw[e] & robust[(prev_label, e)] for e in eps_list}
        fixed, changed = monotone_in_eps(raw)
        for e in eps_list:
            robust[(spec.label, e)] = fixed[e]
            rescued[(spec.label, e)] = changed[e]
        if rejecting:
            ok = {e: defended(cat(adv_p[(spec.label, e)], "correct"), cat(adv_p[(spec.label, e)], "accept"))
                  for e in eps_list}
            ok, _ = monotone_in_eps(ok)
            for e in eps_list:
                adv_accept[(spec.label, e)] = cat(adv_p[(spec.label, e)], "accept")
                defended_rej[(spec.label, e)] = ok[e]
        prev_label = spec.label
    for e in eps_list:
        robust[(WORST, e)] = torch.stack([robust[(s.label, e)] for s in specs]).all(0)

    # -- rows ----------------------------------------------------------------
    common = dict(experiment=experiment, model=model_name, defense=defense,
                  dataset=data_name if dataset is None else dataset, norm=norm,
                  profile=profile, seed=seed, n=len(y), weights=hash_before[:16])
    row = lambda attack, e, metric, value, **extra: Row(  # noqa: E731
        attack=attack, eps=float(e), metric=metric, value=float(value), extra=extra, **common)
    rows = [row("none", 0.0, "clean_accuracy", percent(clean_correct))]
    if rejecting:
        rows += [row("none", 0.0, m, v) for m, v in clean_rejection_metrics(clean_correct, clean_accept).items()]
    rej_rate = percent(~clean_accept) if rejecting else None
    for spec in specs:
        kind = "cascade" if cascade else spec.kind
        for e in eps_list:
            ps = adv_p[(spec.label, e)]
            attacked = sum(p["attacked"] for p in ps)
            extra = dict(kind=kind, base=spec.base_name, loss=spec.loss,
                         max_norm=max(p["stats"]["max_norm"] for p in ps),
                         fragile=sum(p.get("fragile", 0) for p in ps),
                         counted_from_smaller_eps=rescued[(spec.label, e)])
            if cascade:
                extra.update(stage_kind=spec.kind, stage=[s.label for s in specs].index(spec.label) + 1)
            rows.append(row(spec.label, e, "robust_accuracy", percent(robust[(spec.label, e)]), **extra))
            if attacked:
                rows.append(row(spec.label, e, "forward_passes", sum(p["forwards"] for p in ps) / attacked))
                rows.append(row(spec.label, e, "backward_passes", sum(p["backwards"] for p in ps) / attacked))
            if rejecting:
                for m, v in adversarial_rejection_metrics(clean_correct, clean_accept,
                                                          defended_rej[(spec.label, e)],
                                                          adv_accept[(spec.label, e)]).items():
                    rows.append(row(spec.label, e, m, v, clean_rejection_rate=rej_rate))
    for e in eps_list:
        rows.append(row(WORST, e, "robust_accuracy", percent(robust[(WORST, e)]),
                        attacks=[s.label for s in specs], cascade=cascade))
        if rejecting:
            ok = clean_correct & clean_accept
            for s in specs:
                ok = ok & defended_rej[(s.label, e)]
            rows.append(row(WORST, e, "robust_accuracy_with_rejection", percent(ok),
                            attacks=[s.label for s in specs], clean_rejection_rate=rej_rate))

    # -- checks --------------------------------------------------------------
    report = C.CheckReport()
    if checks and w.main:
        stats = [{"attack": label, "eps": e, **p["stats"]} for (label, e), ps in adv_p.items() for p in ps]
        report.results += [
            C.check_threat_model(stats, norm, check_config.threat_tol),
            C.check_monotone(rows, check_config.monotone_tol),
            C.check_per_sample_monotone(rows),
            C.check_iterative_vs_single_step(rows, check_config.iterative_tol),
            C.check_cascade_black_box(rows, check_config.cascade_masking_tol) if cascade
            else C.check_gradient_masking(rows, check_config.masking_tol),
            C.check_fragile(rows),
        ]
        xg, yg = x[:batch_size].to(device), y[:batch_size].to(device)
        report.results.append(C.check_gradients(model, xg, yg, check_config.zero_grad_max_fraction))
        with torch.no_grad():
            report.results.append(C.check_softmax_outputs(model(xg)))
        if check_config.unbounded_subset > 0:
            report.results.append(_unbounded(model, x, y, norm, seed, check_config, units, device))
        report.results += C.check_model_state(False, model.training, hash_before, state_hash(model))
        C.mark_rows(rows, report)
        rows += [row("check", 0.0, f"check:{r.name}", {"pass": 1.0, "warn": 0.5, "fail": 0.0}[r.status],
                     status=r.status, message=r.message)
                 for r in report.results if r.status != "skip"]
        for r in report.failed + report.warnings:
            if not strict or r.status == "warn":
                warnings.warn(f"evaluation check {r.name} {r.status}: {r.message}", stacklevel=2)
        C.collect(f"{model_name}: {', '.join(s.label for s in specs)} at {norm} eps "
                  f"{', '.join(f'{e:g}' for e in eps_list)}", report)

    if store is not None and w.main:
        store.add(rows)
    result = EvalResult(rows, report, specs, eps_list, norm, len(y), clean_correct, robust,
                        clean_accept, adv_accept, units.run, units.skipped)
    if strict:
        report.raise_if_failed()
    return result


def _unbounded(model: nn.Module, x: Tensor, y: Tensor, norm: str, seed: int,
               cfg: C.CheckConfig, units: _Units, device: torch.device) -> C.CheckResult:
    """Run ``cfg.unbounded_attack`` with an eps covering the whole input box on a subset."""
    try:
        spec = parse_attack_spec(cfg.unbounded_attack)
    except AdvgeomError as e:
        return C.CheckResult("unbounded_attack", "skip", f"cannot run {cfg.unbounded_attack!r}: {e}")
    xs, ys = x[:cfg.unbounded_subset].to(device), y[:cfg.unbounded_subset].to(device)
    e = unbounded_eps(norm, xs)
    key = text_hash("unbounded", state_hash(model), tensor_hash(xs, ys), spec.fingerprint(), e, norm, seed)

    def run() -> float:
        payload = units(key, lambda: _attack_unit(model, spec, xs, ys, _clean_unit(model, xs, ys),
                                                   e, norm, unit_seed(seed, "unbounded")), tick=False)
        return percent(_tensor(payload["correct"]))

    return C.check_unbounded(run, cfg.unbounded_max_accuracy, f"{spec.label} at eps={e:g} ({norm})")


def run_evaluation(model: nn.Module, data: Any, attack_specs: str | Sequence[str | AttackSpec] | None,
                   eps_list: str | Sequence[float], *, plot_dir: str | None = None,
                   suite: str | None = None, **kwargs: Any) -> EvalResult:
    """The CLI entry point: :func:`evaluate` with spec/eps strings accepted
    (``"pgd:steps=50,apgd-dlr,square"``, ``"0.1,0.2"`` or ``"2/255,8/255"``), or with
    ``suite`` ("standard", "plus", "rand") AutoAttack's suite as a cascade; with
    ``plot_dir``, an accuracy-vs-eps plot written there (paths in ``result.figures``)."""
    if suite is not None:
        if attack_specs:
            raise AdvgeomError("give either attacks or a suite, not both")
        from advgeom.eval.suite import standard_suite

        result = standard_suite(model, data, eps_list, version=suite, **kwargs)
    else:
        result = evaluate(model, data, attack_specs, eps_list, **kwargs)
    if plot_dir is not None:
        from pathlib import Path

        from advgeom.results.plots import plot_accuracy_vs_eps

        name = kwargs.get("model_name") or type(model).__name__
        path = Path(plot_dir) / f"accuracy_vs_eps_{name}_{result.norm}.png"
        result.figures.append(str(plot_accuracy_vs_eps(result.rows, path)))
    return result
