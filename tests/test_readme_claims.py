"""The results tables of README.md and of the documentation site agree with the reports
they name (issues 27 and 30).

Every table in a results section of README.md or of a page under docs/ (``PAGES`` names
the sections of each) has a ``report`` column linking, on each row, the committed file the
row's numbers come from (the link is relative to the page; docs/results is the
repository's results/) (``results/NAME/report.md`` or a
record under ``results/benchmarks/``). Every number printed in the row must be in that
file at the printed precision: ``87`` needs a number there that rounds to 87, ``0.0065``
one that rounds to 0.0065, both ends of a range such as ``74-87`` are checked, and
``200k``/``20M``/``1e-14`` are read as the numbers they name. A measured number may not
be matched by the report's own ``paper`` column, nor a paper number by its ``measured``
column (``gap`` columns match neither); numbers in a README ``paper`` column may also come
from the papers' reference numbers (``src/advgeom/experiments/reference_*.toml``). The
check is loose in one way: a number may match anywhere else in the named file, so small
integers are easy to match; it is strict on every printed decimal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCES = sorted((ROOT / "src" / "advgeom" / "experiments").glob("reference_*.toml"))

# The sections of README.md whose tables report measured results (the heading's text).
RESULTS_SECTIONS = ("advgeom", "Results", "Smoke runs (quick profile)")
# README sections whose tables must name each row's profile in a ``profile`` column that
# agrees with the report's ``Profile:`` line; a ``quick`` row belongs under a heading that
# says so (issue 26: quick numbers only as smoke-run figures, clearly labelled).
PROFILED_SECTIONS = ("Results", "Smoke runs (quick profile)")
PROFILE_LINE = re.compile(r"^Profile: `([\w-]+)`", re.M)
# Every page that carries results tables, with those sections: the numbers moved out of
# README.md into the documentation site are checked there.
PAGES = {
    README: RESULTS_SECTIONS,
    DOCS / "experiments.md": ("The demo (`make demo`)", "CPU-profile runs", "What the quick profiles measured",
                              "Paper profiles run so far"),
    DOCS / "performance.md": ("Performance",),
}

# A number as printed: not glued to a word before it (l2, fc2, v1045) or after it (2x),
# with an optional thousands separator (200,000), exponent (1e-14) or k/M suffix (200k).
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?([eE][-+]?\d+)?([kM])?(?!\w)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6}


@dataclass(frozen=True)
class Printed:
    """A number as printed: its value and the half-width of its last printed digit."""
    text: str
    value: float
    half_ulp: float


def numbers(text: str) -> list[Printed]:
    """Every number printed in ``text``."""
    out = []
    for m in NUMBER.finditer(text):
        whole, frac, exp, suffix = m.group(1), m.group(2) or "", m.group(3) or "", m.group(4) or ""
        scale = SUFFIX[suffix] * (10.0 ** int(exp[1:]) if exp else 1.0)
        value = float(whole.replace(",", "") + frac) * scale
        digits = len(frac) - 1 if frac else 0
        out.append(Printed(m.group(0), value, 0.5 * 10.0 ** (-digits) * scale))
    return out


def agrees(claim: Printed, pool: list[float]) -> bool:
    """Some number of ``pool`` rounds to ``claim`` at its printed precision."""
    tol = claim.half_ulp * (1 + 1e-9) + 1e-12 * abs(claim.value)
    return any(abs(x - claim.value) <= tol for x in pool)


@dataclass
class Table:
    section: str
    line: int
    header: list[str]
    rows: list[tuple[int, list[str]]]


def _cells(line: str) -> list[str]:
    body = line.strip().strip("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def tables(text: str) -> list[Table]:
    """The markdown tables of ``text`` with the heading each sits under (code blocks skipped)."""
    out: list[Table] = []
    section, fenced, lines = "", False, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            section = line.lstrip("#").strip()
        elif (not fenced and line.startswith("|") and i + 1 < len(lines)
              and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip())):
            table = Table(section, i + 1, [h.lower() for h in _cells(line)], [])
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                table.rows.append((i + 1, _cells(lines[i])))
                i += 1
            out.append(table)
            continue
        i += 1
    return out


def _pool(path: Path) -> list[float]:
    return [n.value for n in numbers(path.read_text())]


def pools(path: Path) -> tuple[list[float], list[float]]:
    """The numbers of a report a README may quote as measured and as the paper's: in the
    report's own tables a ``paper`` column counts for the paper's side only, a ``measured``
    column for the measured side only, and a ``gap`` column for neither; every other
    number (notes, other columns, prose) for both."""
    text = path.read_text()
    lines = text.splitlines()
    measured: list[float] = []
    paper: list[float] = []
    in_table: set[int] = set()
    for table in tables(text):
        in_table.update({table.line, table.line + 1})
        for line, cells in table.rows:
            in_table.add(line)
            for head, cell in zip(table.header, cells):
                values = [n.value for n in numbers(cell)]
                if not head.startswith("gap") and not head.startswith("paper"):
                    measured += values
                if not head.startswith("gap") and not head.startswith("measured"):
                    paper += values
    rest = [n.value for i, line in enumerate(lines, 1) if i not in in_table for n in numbers(line)]
    return measured + rest, paper + rest


def report_profile(path: Path) -> str | None:
    """The profile a report names on its ``Profile:`` line (None for benchmark records)."""
    m = PROFILE_LINE.search(path.read_text())
    return m.group(1) if m else None


def profile_errors(table: Table, line: int, cells: list[str], path: Path, link: str) -> list[str]:
    """A row of a profiled section names its report's profile, and a quick row sits under
    a heading that says quick."""
    if "profile" not in table.header:
        return [f"line {table.line}: the table under {table.section!r} has no 'profile' column"]
    named = cells[table.header.index("profile")].strip("` ").split(" ")[0].strip("`,")
    actual = report_profile(path)
    if actual is None:
        return [] if named in ("—", "-", "benchmark") else [
            f"line {line}: {link} names no profile; the row says {named!r} (use — or benchmark)"]
    errors = [] if named == actual else [f"line {line}: profile {named!r}, but {link} was run with {actual!r}"]
    if actual == "quick" and "quick" not in table.section.lower():
        errors.append(f"line {line}: a quick-profile row under {table.section!r}; quick numbers "
                      f"go under a heading that says quick")
    return errors


def claim_errors(text: str, root: Path = ROOT,
                 sections: tuple[str, ...] = RESULTS_SECTIONS,
                 profiled: tuple[str, ...] = PROFILED_SECTIONS) -> list[str]:
    """Every way the results tables of a page's ``text`` (its ``sections``) disagree with
    the files they name, links read relative to ``root``; empty when each printed number
    is in its row's report. A table with a ``measured`` column outside those sections is an
    error too: its numbers would go unchecked. Tables under the ``profiled`` sections name
    each row's profile too (``profile_errors``)."""
    errors: list[str] = []
    ref_pool = [x for p in REFERENCES for x in _pool(p)]
    found = {t.section for t in tables(text)}
    for section in sections:
        if section not in found:
            errors.append(f"no table under the results heading {section!r}")
    cache: dict[Path, tuple[list[float], list[float]]] = {}
    for table in tables(text):
        if table.section not in sections:
            if any(h.startswith("measured") for h in table.header):
                errors.append(f"line {table.line}: a table of measured numbers under {table.section!r}, "
                              f"which is not a checked results section")
            continue
        if "report" not in table.header:
            errors.append(f"line {table.line}: results table under {table.section!r} has no 'report' column")
            continue
        col = table.header.index("report")
        for line, cells in table.rows:
            if len(cells) != len(table.header):
                errors.append(f"line {line}: {len(cells)} cells for {len(table.header)} columns")
                continue
            links = LINK.findall(cells[col])
            if len(links) != 1:
                errors.append(f"line {line}: the report cell must link one file: {cells[col]!r}")
                continue
            path = (root / links[0]).resolve()
            if not path.is_file():
                errors.append(f"line {line}: the linked report {links[0]} does not exist")
                continue
            if table.section in profiled:
                errors += profile_errors(table, line, cells, path, links[0])
            measured, paper_side = cache.setdefault(path, pools(path))
            for j, cell in enumerate(cells):
                if j == col:
                    continue
                paper = table.header[j].startswith("paper")
                for claim in numbers(cell):
                    if not agrees(claim, paper_side + ref_pool if paper else measured):
                        errors.append(f"line {line}: {claim.text} ({table.header[j]!r}) is not in "
                                      f"{links[0]} at the printed precision: {cell!r}")
    return errors


def page_errors(page: Path, text: str | None = None) -> list[str]:
    """``claim_errors`` of one page of ``PAGES`` (``text`` replaces its content)."""
    return claim_errors(page.read_text() if text is None else text, page.parent, PAGES[page],
                        PROFILED_SECTIONS if page == README else ())


@pytest.mark.parametrize("page", list(PAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_results_tables_agree_with_their_reports(page):
    errors = page_errors(page)
    assert not errors, f"{page.name} claims not in the reports they name:\n" + "\n".join(errors)


def test_no_other_page_has_unchecked_measured_tables():
    """A page outside ``PAGES`` with a table of measured numbers would escape the check."""
    for page in sorted(DOCS.rglob("*.md")):
        if page in PAGES or DOCS / "results" in page.parents:
            continue
        bad = [t for t in tables(page.read_text()) if any(h.startswith("measured") for h in t.header)]
        assert not bad, f"{page.relative_to(ROOT)}: measured numbers in a table no test checks; add it to PAGES"


def test_docs_results_is_the_repository_results():
    assert (DOCS / "results").resolve() == ROOT / "results"


def test_number_parsing_and_precision():
    got = {n.text: (n.value, n.half_ulp) for n in numbers(
        "74-87% at l2 3, fc2, 200k and 20M samples, 2.0e-7, 1e-14, 0.0065, 200,000 points, 2x")}
    assert set(got) == {"74", "87", "3", "200k", "20M", "2.0e-7", "1e-14", "0.0065", "200,000"}
    assert got["200k"] == (200_000.0, 500.0) and got["200,000"] == (200_000.0, 0.5)
    assert got["2.0e-7"][0] == pytest.approx(2.0e-7) and got["2.0e-7"][1] == pytest.approx(0.05e-7)
    p = numbers("0.0065")[0]
    assert agrees(p, [0.00652]) and agrees(p, [0.0065]) and not agrees(p, [0.0066])
    assert agrees(numbers("87")[0], [86.6]) and not agrees(numbers("87")[0], [86.4])
    assert agrees(numbers("2.0e-7")[0], [2.01e-07]) and not agrees(numbers("2.0e-7")[0], [2.1e-07])


def _doctor(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_the_check_fails_on_a_doctored_number():
    text = README.read_text()
    bad = _doctor(text, "| clean accuracy | 97.67 |", "| clean accuracy | 97.76 |")
    errors = claim_errors(bad)
    assert any("97.76" in e for e in errors), errors


def test_the_check_fails_on_either_end_of_a_range():
    page = DOCS / "experiments.md"
    text = page.read_text()
    m = re.search(r"(\d+)-(\d+)% survive PGD", text)
    assert m, "the hyper-mnist row quotes its range of PGD survivors with rejection"
    pool = _pool(ROOT / "results" / "hyper-mnist" / "report.md")
    absent = next(k for k in range(int(m.group(2)) + 1, 1000)
                  if not agrees(numbers(str(k))[0], pool))
    for doctored in (f"{m.group(1)}-{absent}% survive PGD", f"{absent}-{m.group(2)}% survive PGD"):
        errors = page_errors(page, text.replace(m.group(0), doctored, 1))
        assert any(f"{absent} (" in e for e in errors), (doctored, errors)


def test_the_check_covers_the_moved_tables():
    """A doctored number on each docs page is caught: the moved results are still checked."""
    for page, old, new in ((DOCS / "experiments.md", "| 12 of 12 trained snapshots", "| 13 of 12 trained snapshots"),
                           (DOCS / "experiments.md", "front end 81.55 (clean 99.31)", "front end 81.56 (clean 99.31)"),
                           (DOCS / "performance.md", "| 0.52 / 0.53 |", "| 0.58 / 0.53 |")):
        errors = page_errors(page, _doctor(page.read_text(), old, new))
        assert any(new.strip("| ").split()[0] in e for e in errors), (page.name, new, errors)
    moved = (DOCS / "experiments.md").read_text().replace("## What the quick profiles measured", "## Quick numbers", 1)
    errors = page_errors(DOCS / "experiments.md", moved)
    assert any("not a checked results section" in e for e in errors), errors


def test_the_check_needs_a_report_on_every_results_table(tmp_path):
    text = README.read_text()
    no_column = text.replace("| report |", "| source |", 1)
    assert any("has no 'report' column" in e for e in claim_errors(no_column))
    missing = _doctor(text, "(results/demo/report.md)", "(results/demo/missing.md)")
    assert any("does not exist" in e for e in claim_errors(missing))
    renamed = text.replace("## Results", "## Some results", 1)
    assert any("'Results'" in e for e in claim_errors(renamed))
    page = DOCS / "experiments.md"
    renamed = page.read_text().replace("## Paper profiles run so far", "## Paper profiles", 1)
    assert any("Paper profiles run so far" in e for e in page_errors(page, renamed))


def test_the_check_keeps_measured_and_paper_numbers_apart():
    text = README.read_text()
    # the paper's clean accuracy quoted as measured, and a measured number quoted as the paper's
    swapped = _doctor(text, "| clean accuracy | 97.67 | 99.36 |", "| clean accuracy | 99.36 | 97.67 |")
    errors = claim_errors(swapped)
    assert any("99.36 ('measured')" in e for e in errors), errors
    assert any("97.67 ('paper" in e for e in errors), errors


def test_the_check_holds_each_row_to_its_profile():
    """A README results row names its report's profile, and a quick row is labelled as a
    smoke run by its heading (issue 26)."""
    text = README.read_text()
    section = text[text.index("## Smoke runs (quick profile)"):]
    row = next(line for line in section.splitlines() if "| quick |" in line)
    errors = claim_errors(text.replace(row, row.replace("| quick |", "| cpu |", 1), 1))
    assert any("profile 'cpu', but" in e for e in errors), errors
    moved = text.replace(row + "\n", "", 1)
    after_rule = moved.index("\n", moved.index("|---", moved.index("## Results"))) + 1
    moved = moved[:after_rule] + row + "\n" + moved[after_rule:]    # first row of the Results table
    errors = claim_errors(moved)
    assert any("a quick-profile row under 'Results'" in e for e in errors), errors
    no_column = text.replace("| experiment | profile |", "| experiment | setting |")
    assert any("has no 'profile' column" in e for e in claim_errors(no_column))
