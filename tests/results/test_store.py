import sqlite3

import pytest

from advgeom.errors import AdvgeomError
from advgeom.results import ResultStore, Row, environment
from advgeom.results.render import comparison_markdown, rows_csv, rows_json


def _row(**kw):
    base = dict(experiment="e", model="m", defense="d", attack="pgd", eps=0.3, seed=0,
                metric="robust_accuracy", value=12.5)
    base.update(kw)
    return Row(**base)


def test_roundtrip_replace_and_filters(tmp_path):
    s = ResultStore(tmp_path / "r.sqlite")
    s.start_run("cmd", environment())
    s.add([_row(), _row(attack="fgsm", value=40.0, extra={"k": [1, 2]})])
    s.add([_row(value=11.0)])  # same identity: replaced, not duplicated
    rows = s.query(experiment="e")
    assert len(rows) == 2
    assert {r.attack: r.value for r in rows} == {"pgd": 11.0, "fgsm": 40.0}
    assert s.query(attack="fgsm")[0].extra == {"k": [1, 2]}
    assert s.experiments() == ["e"]
    env = s.runs()[0]["env"]
    assert {"git_sha", "torch", "device"} <= set(env)


def test_transaction_is_all_or_nothing(tmp_path):
    s = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(AdvgeomError, match="finite"):
        s.add([_row(), _row(attack="x", value=float("nan"))])
    assert s.query() == []


def test_units_atomic_with_rows(tmp_path):
    s = ResultStore(tmp_path / "r.sqlite")
    assert s.unit("k") is None
    s.finish_unit("k", {"ok": [True, False]}, [_row()])
    assert s.unit("k") == {"ok": [True, False]} and len(s.query()) == 1
    with pytest.raises(AdvgeomError):
        s.finish_unit("k2", {"x": 1}, [_row(value=float("inf"))])
    assert s.unit("k2") is None


def test_unknown_column_and_corrupt_file(tmp_path):
    s = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(AdvgeomError, match="unknown result column"):
        s.query(experimnt="e")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AdvgeomError, match="not a usable results database"):
        ResultStore(bad)


def test_concurrent_writer_sees_committed_rows_only(tmp_path):
    path = tmp_path / "r.sqlite"
    s = ResultStore(path)
    s.add([_row()])
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    con.close()


def test_renderers():
    rows = [_row(), _row(attack="fgsm", value=40.0)]
    csv_text = rows_csv(rows)
    assert csv_text.splitlines()[0].startswith("experiment,model") and len(csv_text.splitlines()) == 3
    assert '"value": 12.5' in rows_json(rows)
    from advgeom.experiments.base import Comparison

    md = comparison_markdown([Comparison("acc", 98.0, 99.36), Comparison("x", None, 1.0)])
    assert "| acc | 98.00 | 99.36 | -1.36 | % |" in md and "| x | — | 1.00 | — |" in md
