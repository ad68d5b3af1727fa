"""Tables and reports as pure functions of rows and comparisons."""
from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from typing import Iterable, Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from advgeom.results.rows import COLUMNS, Row
from advgeom.stats import interval_text, percent_interval


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    if unit == "fraction":
        return f"{v:.4f}"
    if abs(v) != 0 and (abs(v) < 0.1 or abs(v) >= 1e5):
        return f"{v:.3g}"
    return f"{v:.2f}"


PIXEL = 255   # image eps are written in steps of one 8-bit pixel level, k/255


def eps_text(eps: float, max_denominator: int = 1024) -> str:
    """An eps as people write it: ``8/255`` for 0.0313725..., ``0.3`` for 0.3. A value
    with at most five decimals (to 12 significant digits) is written as a decimal;
    otherwise the fraction with the smallest denominator (up to ``max_denominator``)
    equal to it within 1e-9 (over 255 when it is a whole number of pixel levels), else ``%g``."""
    e = float(eps)
    short = f"{e:.12g}"
    if "e" not in short and len(short.partition(".")[2]) <= 5:
        return f"{float(short):g}"
    f = Fraction(e).limit_denominator(max_denominator)
    if abs(float(f) - e) > 1e-9:
        return f"{e:g}"
    if f.denominator > 5 and PIXEL % f.denominator == 0:   # 20/255, not 4/51
        return f"{f.numerator * (PIXEL // f.denominator)}/{PIXEL}"
    return f"{f.numerator}/{f.denominator}"


def interval_cells(measured: float | None, paper: float | None, unit: str, n: int) -> list[str]:
    """n, the 95% Wilson interval of a measured accuracy (unit "%") and whether the
    paper's number lies inside it ("—" where there is nothing to say)."""
    if unit != "%" or not n or measured is None:
        return ["—" if not n else str(n), "—", "—"]
    low, high = percent_interval(measured, int(n))
    inside = "—" if paper is None else ("yes" if low <= paper <= high else "no")
    return [str(n), f"[{low:.1f}, {high:.1f}]", inside]


def comparison_cells(c) -> list[str]:
    """The :data:`COMPARISON_HEADER` cells of a comparison (anything with ``label``,
    ``measured``, ``paper``, ``unit``, ``note`` and optionally ``n``) as strings."""
    m, p, unit, n = c.measured, c.paper, c.unit, int(getattr(c, "n", 0) or 0)
    gap = None if m is None or p is None else m - p
    return [c.label, _fmt(m, unit), *interval_cells(m, p, unit, n)[:2], _fmt(p, unit),
            interval_cells(m, p, unit, n)[2],
            "—" if gap is None else (("+" if gap >= 0 else "") + _fmt(gap, unit)), unit, c.note]


COMPARISON_HEADER = ["quantity", "measured", "n", "95% interval", "paper", "paper inside", "gap",
                     "unit", "note"]


def comparison_table(comparisons: Sequence, title: str = "") -> Table:
    """A rich table of measured vs paper numbers with the gap."""
    t = Table(title=title or None, show_lines=False)
    for h in COMPARISON_HEADER:
        t.add_column(h, justify="right" if h in ("measured", "n", "paper", "gap") else "left")
    for c in comparisons:
        t.add_row(*comparison_cells(c))
    return t


def comparison_markdown(comparisons: Sequence) -> str:
    """The same table in GitHub Markdown."""
    lines = ["| " + " | ".join(COMPARISON_HEADER) + " |",
             "|" + "|".join("---" for _ in COMPARISON_HEADER) + "|"]
    for c in comparisons:
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in comparison_cells(c)) + " |")
    return "\n".join(lines)


def rows_table(rows: Iterable[Row], title: str = "") -> Table:
    """A rich table of stored rows (the ``advgeom results`` view)."""
    cols = ["experiment", "model", "defense", "attack", "eps", "metric", "value", "n", "points", "profile"]
    t = Table(title=title or None)
    for c in cols:
        t.add_column(c, justify="right" if c in ("eps", "value", "n") else "left")
    for r in rows:
        t.add_row(*[(_fmt(getattr(r, c)) if c in ("value",) else eps_text(getattr(r, c)) if c == "eps"
                    else str(getattr(r, c))) for c in cols])
    return t


def rows_csv(rows: Iterable[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([json.dumps(r.extra, sort_keys=True) if c == "extra" else getattr(r, c) for c in COLUMNS])
    return buf.getvalue()


def rows_json(rows: Iterable[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=1)


def pivot_tables(pivots: Sequence, width: int = 100) -> list:
    """Rich renderables of :func:`advgeom.results.pivot.pivot` (the default ``advgeom
    results`` view): per evaluation a heading (clean accuracy with n and its 95% interval,
    checks' verdict) and a table of attacks down, eps across, each accuracy followed by a dim
    row of its 95% Wilson interval, with as many eps columns per table as fit ``width``."""
    out: list = []
    for p in pivots:
        label_w = min(max([12] + [len(lab) for lab, _ in p.lines]), 30)
        per = max(1, (width - label_w - 4) // 9)
        out.append(Text(p.title, style="bold red" if p.verdict.status == "fail" else "bold"))
        for start in range(0, max(len(p.eps), 1), per):
            t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
            t.add_column("attack \\ eps", overflow="fold", min_width=label_w, max_width=label_w)
            for e in p.eps[start:start + per]:
                t.add_column(eps_text(e), justify="right", no_wrap=True)
            cols = range(start, min(start + per, len(p.eps)))
            for lab, values in p.lines:
                t.add_row(lab, *[p.cell(lab, i, _fmt) for i in cols])
                if p.key.get("n"):          # every accuracy with its 95% Wilson interval
                    t.add_row("  95% CI", *[interval_text(values[i], p.key["n"], "–")[1:-1] or "—"
                                            for i in cols], style="dim")
            out.append(t)
    return out
