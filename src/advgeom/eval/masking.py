"""The gradient-masking checks (Carlini et al. 2019, "On Evaluating Adversarial
Robustness": a gradient-free or transfer attack beating the white-box ones flags
masking), paired on the same points: ``b`` points only the black-box side breaks,
``c`` points only the white-box worst case breaks, an exact one-sided McNemar test of
``b > c`` and a rule of a fixed number of percentage points whatever n. The other checks
and the report they go into are in :mod:`advgeom.eval.checks`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor

from advgeom.eval.checks import BLACK_BOX, WHITE_BOX, CheckResult, robust_by_eps, attack_kind
from advgeom.results.rows import Row


def mcnemar_one_sided(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value of ``b > c`` for ``b``, ``c`` discordant pairs:
    ``P(X >= b)`` for ``X ~ Binomial(b + c, 1/2)`` (McNemar 1947; the exact binomial
    form, e.g. Fagerland et al. 2013), computed in integers and divided once."""
    n = b + c
    if b <= 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n


@dataclass(frozen=True)
class MaskingTest:
    """One paired comparison at one eps: ``b`` points only the black-box side breaks,
    ``c`` points only the white-box worst case breaks, ``n`` points evaluated (``b``
    and ``c`` are None when only aggregate rows were given: ``lead`` alone then)."""

    black: str
    white: str
    eps: float
    lead: float                     # percentage points the black-box side breaks more
    b: int | None = None
    c: int | None = None
    n: int | None = None
    c_observed: bool = True         # False in a cascade (c = 0 by construction)

    @property
    def p(self) -> float | None:
        """The exact one-sided McNemar p-value (None without per-sample outcomes)."""
        return None if self.b is None else mcnemar_one_sided(self.b, self.c or 0)

    def flagged(self, level: float, points: float) -> bool:
        """Masking: the black-box lead is significant (one-sided exact McNemar at
        ``level``) or at least ``points`` percentage points, whatever n."""
        return self.lead >= points or (self.p is not None and self.p < level)

    def text(self) -> str:
        if self.b is None:
            paired = ""
        elif self.c_observed:
            paired = (f" (paired on {self.n} points: {self.b} broken only by {self.black}, {self.c} "
                      f"only by {self.white}; exact one-sided McNemar p = {self.p:.2g})")
        else:
            paired = (f" ({self.b} of {self.n} points, after the white-box stages; c = 0 by "
                      f"construction, exact one-sided p = {self.p:.2g})")
        return (f"{self.black} breaks {self.lead:.2f} points more than {self.white} at "
                f"eps={self.eps:g}{paired}")


def _paired(black: str, white: str, eps: float, lead: float, robust_b: Tensor | None,
            robust_w: Tensor | None, c_observed: bool = True) -> MaskingTest:
    """The paired counts from per-sample outcomes (True = robust) when given."""
    if robust_b is None or robust_w is None:
        return MaskingTest(black, white, eps, lead)
    b = int((robust_w & ~robust_b).sum())
    c = int((robust_b & ~robust_w).sum()) if c_observed else 0
    n = int(robust_b.numel())
    return MaskingTest(black, white, eps, 100.0 * (b - c) / max(n, 1), b, c, n, c_observed)


def _all_robust(robust: dict[tuple[str, float], Tensor] | None, labels: list[str],
                eps: float) -> Tensor | None:
    """Per sample, robust to every attack of ``labels`` at ``eps`` (None: not given)."""
    if robust is None or any((a, eps) not in robust for a in labels):
        return None
    return torch.stack([robust[(a, eps)].bool().cpu() for a in labels]).all(0)


def _side(kind: str, labels: list[str]) -> str:
    """``pgd`` or ``the white-box worst case (pgd, apgd-dlr)``."""
    return labels[0] if len(labels) == 1 else f"the {kind} worst case ({', '.join(labels)})"


def _masking_result(tests: list[MaskingTest], level: float, points: float, cells: dict[float, list[str]],
                    passed: str) -> CheckResult:
    bad = [t for t in tests if t.flagged(level, points)]
    if any(t.b is None for t in tests):
        passed += "; rows only: no paired test"
    details: dict[str, Any] = {"tests": [dict(black=t.black, white=t.white, eps=t.eps, lead=t.lead,
                                              b=t.b, c=t.c, n=t.n, p=t.p) for t in tests],
                               "level": level, "points": points}
    if bad:
        msgs = [t.text() for t in bad]
        details.update(violations=msgs, cells=[(a, t.eps) for t in bad for a in cells[t.eps]])
        return CheckResult("gradient_masking", "fail", "possible gradient masking, white-box numbers "
                           "are not trustworthy: " + "; ".join(msgs), details)
    return CheckResult("gradient_masking", "pass", passed, details)


def check_gradient_masking(rows: Iterable[Row], robust: dict[tuple[str, float], Tensor] | None = None,
                           *, level: float = 0.05, points: float = 5.0) -> CheckResult:
    """Flag eps where the gradient-free/transfer attacks (per sample, the worst case over
    them) beat the white-box worst case: paired on the same points when the per-sample
    outcomes ``robust[(attack label, eps)]`` (True = robust) are given, with ``b`` the
    points only the black-box side breaks and ``c`` those only the white-box side breaks,
    flagged when the exact one-sided McNemar test rejects ``b <= c`` at ``level`` or the
    black-box side breaks at least ``points`` percentage points more, whatever n (on
    small samples no test is significant). With rows only, the ``points`` rule alone
    (the accuracy difference is ``100 (b - c) / n``). Carlini et al. 2019: a black-box
    attack beating the white-box ones flags masking."""
    tests, cells = [], {}
    for eps, er in robust_by_eps(rows):
        white = [r for r in er if attack_kind(r) in WHITE_BOX]
        black = [r for r in er if attack_kind(r) in BLACK_BOX]
        if not white or not black:
            continue
        wl, bl = [r.attack for r in white], [r.attack for r in black]
        lead = min(r.value for r in white) - min(r.value for r in black)
        tests.append(_paired(_side("black-box", bl), _side("white-box", wl), eps, lead,
                             _all_robust(robust, bl, eps), _all_robust(robust, wl, eps)))
        cells[eps] = wl
    if not tests:
        return CheckResult("gradient_masking", "skip", "needs a white-box and a black-box/transfer attack")
    return _masking_result(tests, level, points, cells, "no black-box/transfer attack beats the white-box "
                           f"worst case (paired exact McNemar at {1 - level:.0%}, or by {points:g} points)")


def check_cascade_black_box(rows: Iterable[Row], robust: dict[tuple[str, float], Tensor] | None = None,
                            *, level: float = 0.05, points: float = 5.0) -> CheckResult:
    """In a cascade (standard suite), the points a black-box stage breaks after the
    white-box stages before it failed on them (``b``; ``robust`` holds the cascade's
    cumulative per-sample outcomes). The stage never attacks the points the white-box
    stages broke, so ``c`` is 0 by construction and the rule of
    :func:`check_gradient_masking` flags ``b >= 5`` (``2^-5 < 0.05``) or a lead of
    ``points`` percentage points; with rows only, the ``points`` rule alone."""
    tests, cells = [], {}
    for eps, er in robust_by_eps(rows):
        stages = sorted((r for r in er if r.extra.get("stage")), key=lambda r: r.extra["stage"])
        white = [r for r in stages if r.extra.get("stage_kind") in WHITE_BOX]
        for r in stages:
            before = [w for w in white if w.extra["stage"] < r.extra["stage"]]
            if r.extra.get("stage_kind") in BLACK_BOX and before:
                last = min(before, key=lambda w: w.value)   # cumulative: the last white-box stage
                rb = None if robust is None else robust.get((r.attack, eps))
                rw = None if robust is None else robust.get((last.attack, eps))
                tests.append(_paired(r.attack, f"the white-box stages ({', '.join(w.attack for w in before)})",
                                     eps, last.value - r.value, rb, rw, c_observed=False))
                cells[eps] = [w.attack for w in white]
    if not tests:
        return CheckResult("gradient_masking", "pass", "no black-box stage after a white-box one")
    return _masking_result(tests, level, points, cells, "the black-box stages break no significant "
                           f"number of points the white-box stages left (exact test at {1 - level:.0%}, "
                           f"or {points:g} points)")
