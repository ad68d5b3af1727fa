"""Plain-text report of an evaluation: accuracy tables (attacks x eps), rejection
metrics, attack cost and the sanity checks — a pure function of rows and checks."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from advgeom.errors import AdvgeomError
from advgeom.eval.checks import CheckReport
from advgeom.results.rows import Row

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
_TABLES = (
    ("robust_accuracy", "Robust accuracy (%)"),
    ("robust_accuracy_with_rejection", "Robust accuracy with rejection (%, rejected = defended)"),
    ("adv_rejection_rate", "Rejection rate on adversarial inputs (%)"),
    ("forward_passes", "Forward passes per attacked sample"),
    ("backward_passes", "Backward passes per attacked sample"),
)


def _table(rows: list[Row], metric: str, fmt: str) -> list[str]:
    sel = [r for r in rows if r.metric == metric]
    if not sel:
        return []
    eps = sorted({r.eps for r in sel})
    cells: dict[str, dict[float, str]] = defaultdict(dict)
    flagged: set[str] = set()
    for r in sel:
        failed = r.extra.get("failed_checks") or []
        flagged.update(failed)
        cells[r.attack][r.eps] = format(r.value, fmt) + ("!" if failed else "")
    order = sorted(cells, key=lambda a: (a == "worst_case", list(cells).index(a)))
    width = max(12, *(len(a) for a in order)) + 2
    head = "attack".ljust(width) + "".join(f"eps={e:g}".rjust(11) for e in eps)
    lines = [head, "-" * len(head)]
    for a in order:
        lines.append(a.ljust(width) + "".join(cells[a].get(e, "-").rjust(11) for e in eps))
    if flagged:
        lines.append(f"! = not trustworthy as it stands: failed check(s) {', '.join(sorted(flagged))}")
    return lines


def format_rows(rows: Iterable[Row]) -> str:
    """The accuracy/rejection/cost tables of evaluation rows."""
    rows = list(rows)
    out: list[str] = []
    first = next((r for r in rows if r.metric == "clean_accuracy"), rows[0] if rows else None)
    if first is not None:
        out.append(f"model {first.model} | defense {first.defense} | data {first.dataset or '-'} "
                   f"| n={first.n} | norm {first.norm} | seed {first.seed}")
    for metric, label in (("clean_accuracy", "clean accuracy"),
                          ("clean_accuracy_accepted", "clean accuracy on accepted"),
                          ("clean_rejection_rate", "clean rejection rate")):
        for r in rows:
            if r.metric == metric and r.attack == "none":
                out.append(f"{label}: {r.value:.2f}%")
    for metric, title in _TABLES:
        t = _table(rows, metric, ".2f" if "passes" not in metric else ".1f")
        if t:
            out += ["", title, *t]
    return "\n".join(out)


def format_checks(report: CheckReport) -> str:
    """One line per check: ``PASS name: message``."""
    if not report.results:
        return "Checks: not run"
    lines = [f"Checks ({len(report.failed)} failed, {len(report.warnings)} warnings):"]
    lines += [f"  {_MARK[r.status]} {r.name}: {r.message}" for r in report.results]
    return "\n".join(lines)


def summarize_checks(report: CheckReport) -> str:
    """One line: the count per status, then every failed or warning check in full."""
    if not report.results:
        return "checks not run"
    counts: dict[str, int] = {}
    for r in report.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    head = ", ".join(f"{n} {status}" for status, n in counts.items())
    flagged = [f"{_MARK[r.status]} {r.name}: {r.message}" for r in report.results
               if r.status in ("fail", "warn")]
    return "; ".join([head, *flagged])


def format_report(result: Any) -> str:
    """Text report of an :class:`~advgeom.eval.runner.EvalResult` (or anything with
    ``rows`` and ``checks``), check rows excluded from the tables."""
    if not hasattr(result, "rows") or not hasattr(result, "checks"):
        raise AdvgeomError(f"format_report needs an evaluation result (rows and checks), got "
                           f"{type(result).__name__}")
    rows = [r for r in result.rows if not r.metric.startswith("check:")]
    parts = [format_rows(rows), "", format_checks(result.checks)]
    figures = getattr(result, "figures", [])
    if figures:
        parts += ["", "Figures:", *(f"  {f}" for f in figures)]
    return "\n".join(parts)
