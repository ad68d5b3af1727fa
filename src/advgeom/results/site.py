"""``advgeom report``: a static HTML site regenerated from the results database alone.

``index.html`` holds a leaderboard per (dataset, threat model, eps) of every stored
evaluation and point set (its n, clean accuracy, the paper's attack, the standard
suite, the per-sample worst case, the checks' verdict, the commit), sortable by any
column with a small inline script; ``experiments/NAME.html`` holds one experiment's
paper-vs-measured tables, figures (written out of the database), notes, environment
and stored results (a table per evaluation and point set).
Pages come from the Jinja2 templates in ``advgeom/results/templates``; nothing is
fetched at view time.
"""
from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from advgeom.errors import AdvgeomError
from advgeom.results.pivot import Pivot, check_matrix, leaderboard, one_name, pivot, point_set_text
from advgeom.results.render import COMPARISON_HEADER, _fmt, comparison_cells, eps_text
from advgeom.results.store import ResultStore
from advgeom.stats import interval_text

DEFAULT_SITE = Path("runs") / "site"
# Written into every site directory: a directory is rewritten only when it holds this file
# (a site written here) or nothing, never a user's folder given as ``--out`` by mistake.
SITE_MARK = ".advgeom-site"


def slug(text: str) -> str:
    """A file-name-safe form of an experiment name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"


def number(v: float | None) -> str:
    """A percentage cell (``—`` when absent)."""
    return _fmt(v)


@dataclass
class Page:
    """One experiment: its stored reports (paper vs measured) and its stored results."""

    name: str
    title: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    pivots: list[Pivot] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def href(self) -> str:
        return f"experiments/{slug(self.name)}.html"


def _comparison_rows(payload: dict[str, Any]) -> list[list[str]]:
    out = []
    for c in payload.get("comparisons", []):
        out.append(comparison_cells(SimpleNamespace(label=c.get("label", ""), measured=c.get("measured"),
                                                    paper=c.get("paper"), unit=c.get("unit", "%"),
                                                    note=c.get("note", ""), n=c.get("n", 0))))
    return out


def _pages(store: ResultStore, runs: dict[int, dict[str, Any]]) -> list[Page]:
    pages: dict[str, Page] = {}
    by_exp: dict[str, list] = defaultdict(list)
    run_ids: dict[str, set] = defaultdict(set)
    pairs = store.query_with_runs()
    for row, run_id in zip(one_name(r for r, _ in pairs), (i for _, i in pairs)):
        by_exp[row.experiment].append(row)
        run_ids[row.experiment].add(run_id)
    for rep in store.reports():
        page = pages.setdefault(rep["experiment"], Page(rep["experiment"]))
        page.title = page.title or rep["payload"].get("title", "")
        rep["comparison_rows"] = _comparison_rows(rep["payload"])
        rep["run"] = runs.get(rep["run_id"])
        rep["dir"] = f"{slug(page.name)}/{slug(rep['profile'])}-seed{rep['seed']}"
        page.reports.append(rep)
        run_ids[page.name].add(rep["run_id"])
    for name, rows in by_exp.items():
        pages.setdefault(name, Page(name)).pivots = pivot(rows)
    for name, page in pages.items():
        page.runs = [runs[i] for i in sorted(i for i in run_ids[name] if i in runs)]
    return [pages[k] for k in sorted(pages)]


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("advgeom.results", "templates"),
                      autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["slug"] = slug
    env.filters["point_set"] = lambda key: point_set_text(key.get("n", 0), key.get("points", ""))
    env.filters["digest"] = lambda points: points.split(":", 1)[-1][:8]
    env.filters["ci"] = lambda value, n: interval_text(value, n)
    env.filters["eps"] = eps_text
    env.filters["check_matrix"] = check_matrix
    return env


def report_links(reports: list[dict[str, Any]], out: Path,
                 committed: Path = Path("results")) -> dict[tuple, str]:
    """``{(experiment, profile, seed): href}`` and ``{(experiment,): href}`` of the reports
    that exist, relative to the site directory ``out``: the ``report.md`` a stored report
    names, else ``results/<experiment>/report.md`` (the committed reports) under the
    current directory."""
    links: dict[tuple, str] = {}
    here = Path(out).resolve()
    for rep in reports:
        path = Path(rep["payload"].get("report_path", ""))
        if rep["payload"].get("report_path") and path.is_file():
            href = os.path.relpath(path.resolve(), here)
            links[(rep["experiment"], rep["profile"], rep["seed"])] = href
            links.setdefault((rep["experiment"],), href)
    for d in committed.iterdir() if committed.is_dir() else ():
        if (d / "report.md").is_file():
            links.setdefault((d.name,), os.path.relpath((d / "report.md").resolve(), here))
    return links


def build_site(store: ResultStore, out_dir: str | Path = DEFAULT_SITE) -> Path:
    """Write the site for everything in ``store`` under ``out_dir``; returns ``index.html``.

    The directory is rewritten from scratch (figures included) so that it mirrors the
    database; raises :class:`AdvgeomError` when the database holds nothing to show,
    ``out_dir`` cannot be written, or it is a non-empty directory that no earlier call
    wrote (:data:`SITE_MARK`), whose files are left untouched."""
    runs = {r["run_id"]: r for r in store.runs()}
    pages = _pages(store, runs)
    if not pages:
        raise AdvgeomError(f"{store.path} holds no results yet (run `advgeom reproduce` or `advgeom evaluate` first)")
    boards = leaderboard(store.query_with_runs(), runs)
    env = _templates()
    out = Path(out_dir)
    links = report_links(store.reports(), out)
    env.globals["report_href"] = lambda key: links.get(
        (key["experiment"], key["profile"], key["seed"]), links.get((key["experiment"],), ""))
    common = dict(database=str(store.path), header=COMPARISON_HEADER, pages=pages)
    _check_site_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / SITE_MARK).write_text("written by `advgeom report`, which rewrites this directory\n")
        if (out / "experiments").is_dir():
            shutil.rmtree(out / "experiments")
        (out / "experiments").mkdir(parents=True, exist_ok=True)
        index = out / "index.html"
        index.write_text(env.get_template("index.html").render(boards=boards, checks=check_matrix(
            (e.key, e.verdict) for b in boards for e in b.entries),
                                                               root="", **common))
        for page in pages:
            for rep in page.reports:
                fig_dir = out / "experiments" / rep["dir"]
                fig_dir.mkdir(parents=True, exist_ok=True)
                for name, png in rep["figures"].items():
                    (fig_dir / slug(name)).write_bytes(png)
                rep["figure_files"] = [f"{rep['dir']}/{slug(n)}" for n in rep["figures"]]
            html = env.get_template("experiment.html").render(page=page, root="../", **common)
            (out / page.href).write_text(html)
    except OSError as e:
        raise AdvgeomError(f"cannot write the report to {out}: {e.strerror or e}") from None
    return index


def _check_site_dir(out: Path) -> None:
    """Refuse a ``--out`` that exists and is not a site directory: a file, or a non-empty
    directory without :data:`SITE_MARK` (the site deletes and rewrites what it owns)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise AdvgeomError(f"cannot write the report to {out}: it is a file, not a directory")
    try:
        foreign = not (out / SITE_MARK).is_file() and not _legacy_site(out) and any(out.iterdir())
    except OSError as e:
        raise AdvgeomError(f"cannot write the report to {out}: {e.strerror or e}") from None
    if foreign:
        raise AdvgeomError(f"{out} is a non-empty directory that `advgeom report` did not write; "
                           "give an empty or new --out (the report rewrites its directory)")


def _legacy_site(out: Path) -> bool:
    """A site written before :data:`SITE_MARK` existed: its index page has the title
    every page of the site's templates has."""
    index = out / "index.html"
    return index.is_file() and "<title>advgeom" in index.read_text(errors="replace")[:2000]


def record_report(store: ResultStore, report: Any, *, profile: str, seed: int) -> None:
    """Keep an experiment's report in ``store`` (what ``advgeom report`` renders):
    ``report`` is what :func:`advgeom.experiments.runner.reproduce` returns (experiment,
    outcome, path, seconds); its figures are stored as PNG bytes, attributed to the
    latest run of ``advgeom reproduce NAME`` (a figure file that cannot be read is
    listed as missing)."""
    exp, outcome = report.experiment, report.outcome
    mine = [r for r in store.runs() if r["command"].split()[:3] == ["advgeom", "reproduce", exp.name]]
    figures, missing = {}, []
    for f in outcome.figures:
        try:
            figures[Path(f).name] = Path(f).read_bytes()
        except OSError:
            missing.append(str(f))  # the run's result stands; the page says the figure is missing
    payload = {"title": exp.title, "paper": exp.paper, "reference": exp.reference or "",
               "description": exp.description, "seconds": float(report.seconds),
               "report_path": str(report.path), "notes": list(outcome.notes), "missing_figures": missing,
               "comparisons": [{"label": c.label, "measured": c.measured, "paper": c.paper,
                                "unit": c.unit, "note": c.note, "n": getattr(c, "n", 0)}
                               for c in outcome.comparisons]}
    store.save_report(exp.name, profile, seed, payload, figures, run_id=mine[-1]["run_id"] if mine else None)
