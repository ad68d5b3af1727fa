"""Minimal-perturbation evaluation: per-sample smallest adversarial perturbations found
by a min-norm attack (``deepfool``, ``cw_l2``; weight-penalization-classification-layer.txt
reports DeepFool/C&W), their l2 and linf sizes, and the accuracy-vs-eps curve they imply
(an upper bound on robust accuracy: the attack may miss closer adversarials).

Per sample: 0 when the clean input is already misclassified, ``inf`` when the attack
found nothing, else the norm of ``adv - x`` (only if ``adv`` is misclassified).
Resumable per batch through the results store like :func:`advgeom.eval.evaluate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from advgeom.attacks.spec import AttackSpec, parse_attacks
from advgeom.errors import AdvgeomError
from advgeom.eval.bookkeeping import delta_norms, percent, unit_seed
from advgeom.eval.rejection import predict
from advgeom.eval.units import Units, check_classes, check_readable, device_of, unpack
from advgeom.hashing import state_hash, tensor_hash, text_hash
from advgeom.progress import progress_bar
from advgeom.results.rows import Row, point_set
from advgeom.results.store import ResultStore
from advgeom.seeding import make_generator
from advgeom.types import check_inputs

NORMS = ("l2", "linf")


@dataclass
class MinNormResult:
    """Per-sample minimal perturbation sizes found by one attack."""

    attack: str
    clean_correct: Tensor       # (n,) bool
    l2: Tensor                  # (n,) float64: 0 misclassified, inf failed
    linf: Tensor                # (n,) float64
    points: str = ""            # the evaluated point set (results.rows.point_set)

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def success(self) -> Tensor:
        """Clean-correct samples the attack broke."""
        return self.clean_correct & torch.isfinite(self.l2)

    def distances(self, norm: str) -> Tensor:
        if norm not in NORMS:
            raise AdvgeomError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        return self.l2 if norm == "l2" else self.linf

    def robust_accuracy(self, eps: float, norm: str = "l2") -> float:
        """Accuracy (%) at ``eps``: clean-correct samples whose minimal perturbation is
        larger than ``eps`` (or was not found)."""
        d = self.distances(norm)
        return percent(self.clean_correct & (d > eps))

    def curve(self, eps: Sequence[float], norm: str = "l2") -> list[float]:
        return [self.robust_accuracy(float(e), norm) for e in eps]

    def summary(self) -> dict[str, float]:
        """Success rate over clean-correct samples; medians/means over successes."""
        ok = self.success
        out = {"success_rate": 100.0 * float(ok.sum()) / max(int(self.clean_correct.sum()), 1)}
        for norm in NORMS:
            d = self.distances(norm)[ok]
            if d.numel():
                out[f"median_{norm}"] = float(d.median())
                out[f"mean_{norm}"] = float(d.mean())
        return out

    def rows(self, eps: Sequence[float] = (), *, norm: str = "l2", **common: Any) -> list[Row]:
        """Summary rows (eps 0) plus the implied ``robust_accuracy`` at each ``eps``.
        ``common``: Row fields (experiment, model, defense, seed, dataset, profile)."""
        base = dict(experiment="adhoc", model="model", defense="none", seed=0)
        base.update(common)
        base["n"] = self.n
        base.setdefault("points", self.points)
        rows = [Row(attack=self.attack, eps=0.0, metric=m, value=v, norm=norm,
                    extra={"over": "successful" if m != "success_rate" else "clean_correct"}, **base)
                for m, v in self.summary().items()]
        rows += [Row(attack=self.attack, eps=float(e), metric="robust_accuracy", value=v, norm=norm,
                     extra={"derived_from": "min_norm"}, **base)
                 for e, v in zip(eps, self.curve(eps, norm))]
        return rows

    def plot(self, path: str | Path, *, eps: Sequence[float] | None = None,
             norm: str = "l2") -> list[Path]:
        """Histogram of the l2/linf distances at ``path``; with ``eps``, also the
        accuracy curve next to it (``*_curve.png``)."""
        from advgeom.results.plots import plot_curves, plot_min_norm_histogram

        p = Path(path)
        out = [plot_min_norm_histogram({"l2": self.l2[self.clean_correct],
                                        "linf": self.linf[self.clean_correct]}, p,
                                       title=f"{self.attack}: minimal perturbations")]
        if eps is not None:
            out.append(plot_curves(list(eps), {self.attack: self.curve(eps, norm)},
                                   p.with_name(p.stem + "_curve.png"), xlabel=f"eps ({norm})",
                                   title=f"{self.attack}: accuracy implied by minimal perturbations"))
        return out


def _unit(model: nn.Module, spec: AttackSpec, xb: Tensor, yb: Tensor, norm: str,
          seed: int) -> dict[str, Any]:
    pred, _ = predict(model, xb)
    correct = pred == yb
    l2 = torch.zeros(len(yb), dtype=torch.float64)
    linf = torch.zeros(len(yb), dtype=torch.float64)
    idx = correct.nonzero().flatten()
    if idx.numel():
        gen = make_generator(seed, xb.device)
        adv = spec.fn(model, xb[idx], yb[idx], eps=float("inf"), norm=norm, generator=gen,
                      **spec.call_kwargs())
        if not isinstance(adv, Tensor) or adv.shape != xb[idx].shape:
            raise AdvgeomError(f"attack {spec.label!r} returned a bad adversarial batch")
        adv_pred, _ = predict(model, adv)
        d2, dinf = delta_norms(xb[idx], adv)
        broken = (adv_pred != yb[idx]).cpu() & torch.isfinite(d2)
        l2[idx.cpu()] = torch.where(broken, d2, torch.tensor(float("inf"), dtype=torch.float64))
        linf[idx.cpu()] = torch.where(broken, dinf, torch.tensor(float("inf"), dtype=torch.float64))
    enc = lambda t: [-1.0 if v == float("inf") else float(v) for v in t]  # noqa: E731
    return {"correct": [bool(v) for v in correct.cpu()], "l2": enc(l2), "linf": enc(linf)}


def minimal_perturbations(model: nn.Module, data: Any, attack: str | AttackSpec = "deepfool", *,
                          norm: str = "l2", batch_size: int = 256, n: int | None = None,
                          seed: int = 0, store: ResultStore | None = None,
                          progress: bool = True) -> MinNormResult:
    """Run a min-norm attack (unbounded: ``eps=inf``) on the clean-correct samples of
    ``data`` and record the size of each perturbation found (l2 and linf)."""
    (spec,) = parse_attacks([attack])
    if spec.kind != "min_norm":
        raise AdvgeomError(f"attack {spec.label!r} is not a min-norm attack (use deepfool or cw_l2)")
    if norm not in NORMS:
        raise AdvgeomError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if batch_size <= 0:
        raise AdvgeomError(f"batch_size must be positive, got {batch_size}")
    x, y, num_classes, data_name = unpack(data, n)
    check_inputs(x, y, num_classes or getattr(model, "num_classes", None))
    if model.training:
        raise AdvgeomError("model is in training mode: call model.eval() before evaluating")
    device = device_of(model, x)
    check_classes(check_readable(model, x[:1].to(device)), y, num_classes, data_name)
    fp = (state_hash(model), tensor_hash(x, y), batch_size, spec.fingerprint(), norm, seed)
    starts = list(range(0, len(y), batch_size))
    payloads = []
    with progress_bar(len(starts), f"min-norm {spec.label}", enabled=progress) as bar:
        units = Units(store, bar)
        for b, s0 in enumerate(starts):
            xb, yb = x[s0:s0 + batch_size].to(device), y[s0:s0 + batch_size].to(device)
            payloads.append(units(text_hash("min_norm", *fp, b), lambda: _unit(
                model, spec, xb, yb, norm, unit_seed(seed, "min_norm", b, spec.fingerprint(), norm))))
    dec = lambda k: torch.tensor([v if v >= 0 else float("inf") for p in payloads for v in p[k]],  # noqa: E731
                                 dtype=torch.float64)
    correct = torch.tensor([v for p in payloads for v in p["correct"]], dtype=torch.bool)
    return MinNormResult(spec.label, correct, dec("l2"), dec("linf"), point_set(len(y), fp[1]))
