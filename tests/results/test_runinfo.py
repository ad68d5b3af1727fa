"""RUN.md: how a run was made (command, sha and tree state, machine, threads, load, time),
written by ``advgeom reproduce`` and, for older reports, from what the report recorded."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from advgeom.results import environment
from advgeom.results.runinfo import (DIRTY_VERDICT, NOT_RECORDED, Snapshot, invocation,
                                     load_average, machine, recorded_facts, recorded_run_markdown,
                                     run_markdown, run_record, snapshot, tree_state)

RESULTS = Path(__file__).resolve().parents[2] / "results"
ENV = {"advgeom": "0.1.0", "git_sha": "abc123def456", "code": "c0de", "torch": "2.13.0+cpu",
       "python": "3.11.7", "platform": "Linux-x86_64", "device": "cpu:Example CPU", "threads": "2",
       "world_size": "1"}
MACHINE = {"cpu": "Example CPU", "logical_cpus": "4", "usable_cpus": "2", "nice": "10",
           "thread_variables": "OMP_NUM_THREADS=2"}


def _row(text: str, fact: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"| {fact} |"):
            return line.split("|")[2].strip()
    raise AssertionError(f"no row {fact!r} in\n{text}")


def test_load_average_reads_proc_file_and_falls_back(tmp_path):
    f = tmp_path / "loadavg"
    f.write_text("1.50 0.75 0.25 2/345 6789\n")
    assert load_average(f) == (1.5, 0.75, 0.25)
    bad = tmp_path / "bad"
    bad.write_text("garbage\n")
    expected = os.getloadavg() if hasattr(os, "getloadavg") else None
    got = load_average(bad)
    assert (got is None) == (expected is None)
    assert got is None or len(got) == 3


def test_snapshot_and_machine_describe_this_process():
    s = snapshot()
    assert s.wall > 0 and s.cpu >= 0
    m = machine()
    assert set(m) == {"cpu", "logical_cpus", "usable_cpus", "nice", "thread_variables"}
    assert 1 <= int(m["usable_cpus"]) <= int(m["logical_cpus"])


def test_tree_state_from_recorded_sha():
    assert tree_state("abc123") == "clean"
    assert tree_state("abc123+dirty") == "dirty"
    assert tree_state("unknown") == tree_state("") == tree_state(NOT_RECORDED) == "unknown"


def test_run_markdown_states_every_fact():
    text = run_markdown("advgeom reproduce demo --profile quick", ENV, (0.1, 0.2, 0.3), (2.2, 1.0, 0.5),
                        243.4, machine=MACHINE, started=0.0, cpu_seconds=450.0,
                        argv=["/venv/bin/advgeom", "reproduce", "demo", "--root", "runs/x"])
    assert _row(text, "command") == "`advgeom reproduce demo --profile quick`"
    assert _row(text, "invoked as") == "`advgeom reproduce demo --root runs/x`"
    assert _row(text, "started") == "1970-01-01 00:00:00 UTC"
    assert _row(text, "git sha") == "`abc123def456`"
    assert _row(text, "tree clean").startswith("yes")
    assert _row(text, "machine") == "Example CPU; 2 usable of 4 logical CPUs; Linux-x86_64"
    assert _row(text, "threads") == "torch 2; thread variables: OMP_NUM_THREADS=2"
    assert _row(text, "niceness") == "10"
    assert _row(text, "load average at start") == "0.10 / 0.20 / 0.30 (1 / 5 / 15 min)"
    assert _row(text, "load average at end") == "2.20 / 1.00 / 0.50 (1 / 5 / 15 min)"
    assert _row(text, "wall time") == "243 s"
    assert _row(text, "CPU time").startswith("450 s")
    assert "otherwise idle" in text and DIRTY_VERDICT not in text
    # pure: the same facts give the same page
    assert text == run_markdown("advgeom reproduce demo --profile quick", ENV, (0.1, 0.2, 0.3),
                                (2.2, 1.0, 0.5), 243.4, machine=MACHINE, started=0.0, cpu_seconds=450.0,
                                argv=["/venv/bin/advgeom", "reproduce", "demo", "--root", "runs/x"])


def test_run_markdown_flags_a_dirty_tree_and_a_shared_machine():
    env = {**ENV, "git_sha": "abc123+dirty"}
    text = run_markdown("advgeom reproduce x", env, (8.4, 6.0, 5.0), (10.3, 8.0, 6.0), 3000.0,
                        machine=MACHINE)
    assert text.splitlines()[2].startswith("**Run from a dirty tree: to be rerun from a clean tree**")
    assert _row(text, "tree clean").startswith("**no**")
    assert "Other jobs shared the machine" in text and "inflated" in text
    # other jobs that start after the run show in the load at the end, beyond its own threads
    late = run_markdown("advgeom reproduce x", ENV, (0.0, 0.0, 0.0), (3.5, 1.0, 0.5), 60.0, machine=MACHINE)
    assert "Other jobs shared the machine" in late


def test_run_markdown_says_what_was_not_recorded():
    text = run_markdown("advgeom reproduce x", {}, None, None, None)
    for fact in ("invoked as", "started", "code fingerprint", "niceness", "load average at start",
                 "load average at end", "wall time", "CPU time"):
        assert _row(text, fact) == NOT_RECORDED, fact
    assert _row(text, "tree clean").startswith("unknown")
    assert "How busy the machine was is unknown" in text


def test_invocation_names_the_program():
    assert invocation(["/x/bin/advgeom", "reproduce", "demo"]) == "advgeom reproduce demo"
    assert invocation(["/x/advgeom/__main__.py", "train", "-c", "a b.toml"]) == \
        "python -m advgeom train -c 'a b.toml'"
    assert invocation(["bench.py", "--n", "3"]) == "python bench.py --n 3"
    assert invocation(None) == NOT_RECORDED


def test_run_record_measures_between_snapshots():
    start, end = Snapshot(1000.0, (0.0, 0.0, 0.0), 5.0), Snapshot(1090.0, (1.9, 0.5, 0.2), 170.0)
    text = run_record("advgeom reproduce demo --profile quick", environment("cpu"), start, end=end,
                      argv=["advgeom", "reproduce", "demo"], machine_info=MACHINE)
    assert _row(text, "wall time") == "90 s"
    assert _row(text, "CPU time").startswith("165 s")
    assert _row(text, "load average at end").startswith("1.90")
    live = run_record("advgeom reproduce demo", environment("cpu"), snapshot())
    assert _row(live, "machine").split("; ")[1].endswith("logical CPUs")


REPORT = """# demo: x

Profile: `quick` — seed 0 — 243 s

## Measured vs paper

## Reproduce

```
advgeom reproduce demo --profile quick
```

## Environment

- advgeom: 0.1.0
- device: cpu:cpu
- git_sha: 1bd1f82fb528+dirty
- threads: 1
- torch: 2.13.0+cpu
"""


def test_recorded_run_markdown_from_a_report():
    facts = recorded_facts(REPORT)
    assert facts["command"] == "advgeom reproduce demo --profile quick"
    assert facts["seconds"] == "243" and facts["profile"] == "quick" and facts["threads"] == "1"
    text = recorded_run_markdown(REPORT, notes=["run beside other jobs"])
    assert "**Run from a dirty tree: to be rerun from a clean tree**" in text
    assert _row(text, "wall time") == "243 s"
    assert _row(text, "load average at start") == NOT_RECORDED
    assert _row(text, "machine").startswith("CPU model not recorded; cores not recorded")
    assert "the load average" in text and "`cpu:cpu`" in text and "- run beside other jobs" in text


def _reports() -> list[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/report.md"))


@pytest.mark.parametrize("folder", _reports(), ids=lambda p: p.name)
def test_every_committed_report_has_a_run_file(folder):
    """Every report under results/ says how it was run; a report from a dirty tree says
    it is to be rerun from a clean one (issue 27)."""
    run = folder / "RUN.md"
    assert run.exists(), f"{folder.name}: no RUN.md beside report.md"
    if tree_state(recorded_facts((folder / "report.md").read_text()).get("git_sha", "")) == "dirty":
        assert DIRTY_VERDICT in run.read_text().lower(), f"{folder.name}: dirty run not flagged"
