"""Committed ``cpu``-profile reports (issue 26): every ``results/*-cpu/report.md`` names its
profile, attacks at least 1,000 points, was run from a clean tree (its git sha carries no
``+dirty``) and has the RUN.md that says how it was run."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "results"


def cpu_report_problems(folder: Path) -> list[str]:
    """What a cpu-profile result folder lacks (empty: complete)."""
    report, run = folder / "report.md", folder / "RUN.md"
    if not report.is_file():
        return ["no report.md"]
    text = report.read_text()
    problems = []
    if not re.search(r"^Profile: `cpu`", text, re.M):
        problems.append("the header does not name profile `cpu`")
    sha = re.search(r"^- git_sha: (\S+)", text, re.M)
    if sha is None:
        problems.append("no git sha in the Environment section")
    elif sha.group(1).endswith("+dirty"):
        problems.append(f"run from a dirty tree ({sha.group(1)})")
    ns = [int(n) for n in re.findall(r"^\|[^|\n]+\|[^|\n]+\| (\d+) \|", text, re.M)]
    if not ns or max(ns) < 1000:
        problems.append(f"no number on at least 1,000 points (largest n: {max(ns) if ns else 'none'})")
    if not run.is_file():
        problems.append("no RUN.md")
    elif not re.search(r"\| tree clean \| yes", run.read_text()):
        problems.append("RUN.md does not record a clean tree")
    return problems


FOLDERS = sorted(p for p in RESULTS.glob("*-cpu") if p.is_dir())


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_committed_cpu_reports_are_complete(folder):
    assert cpu_report_problems(folder) == []


GOOD = """# x: title

Profile: `cpu` — seed 0 — 10 s

| quantity | measured | n | 95% interval | paper |
|---|---|---|---|---|
| clean | 99.00 | 1000 | [98.2, 99.5] | 99.1 |

## Environment

- git_sha: 0123456789ab
"""


def test_the_checker_finds_each_defect(tmp_path):
    ok = tmp_path / "ok-cpu"
    ok.mkdir()
    (ok / "report.md").write_text(GOOD)
    (ok / "RUN.md").write_text("| tree clean | yes (no uncommitted changes) |\n")
    assert cpu_report_problems(ok) == []
    cases = {"the header does not name profile": GOOD.replace("`cpu`", "`quick`"),
             "dirty tree": GOOD.replace("0123456789ab", "0123456789ab+dirty"),
             "no number on at least 1,000": GOOD.replace("| 1000 |", "| 200 |"),
             "no git sha": GOOD.replace("- git_sha: 0123456789ab", "")}
    for problem, text in cases.items():
        (ok / "report.md").write_text(text)
        assert any(problem in p for p in cpu_report_problems(ok)), problem
    (ok / "report.md").write_text(GOOD)
    (ok / "RUN.md").unlink()
    assert cpu_report_problems(ok) == ["no RUN.md"]
    (ok / "RUN.md").write_text("| tree clean | no |\n")
    assert cpu_report_problems(ok) == ["RUN.md does not record a clean tree"]
