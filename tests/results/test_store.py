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

    md = comparison_markdown([Comparison("acc", 98.0, 99.36, n=300), Comparison("x", None, 1.0)])
    assert "| acc | 98.00 | 300 | [95.7, 99.1] | 99.36 | no | -1.36 | % |" in md
    assert "| x | — | — | — | 1.00 | — | — | % |" in md


def test_two_checkpoints_of_one_architecture_keep_separate_rows(tmp_path):
    from advgeom.results import ResultStore, Row

    store = ResultStore(tmp_path / "r.sqlite")
    base = dict(experiment="e", model="cnn", defense="none", attack="pgd", eps=0.1, seed=0,
                metric="robust_accuracy")
    store.add([Row(value=10.0, weights="aaaa", **base), Row(value=70.0, weights="bbbb", **base)])
    assert sorted(r.value for r in store.query(model="cnn")) == [10.0, 70.0]


def test_a_weaker_rerun_does_not_replace_a_stronger_worst_case(tmp_path):
    import pytest

    from advgeom.results import ResultStore, Row

    store = ResultStore(tmp_path / "r.sqlite")
    base = dict(experiment="e", model="cnn", defense="none", attack="worst_case", eps=0.1, seed=0,
                metric="robust_accuracy", weights="aaaa")
    store.add([Row(value=9.0, extra={"attacks": ["pgd", "fgsm"]}, **base)])
    with pytest.warns(UserWarning, match="kept the stored worst case"):
        notes = store.add([Row(value=38.0, extra={"attacks": ["fgsm"]}, **base)])
    assert notes
    rows = {r.attack: r.value for r in store.query(model="cnn")}
    assert rows == {"worst_case": 9.0, "worst_case[fgsm]": 38.0}
    store.add([Row(value=7.0, extra={"attacks": ["fgsm", "pgd", "square"]}, **base)])  # stronger
    assert {r.attack: r.value for r in store.query(model="cnn")}["worst_case"] == 7.0


def test_old_databases_gain_the_weights_column(tmp_path):
    import sqlite3

    from advgeom.results import ResultStore

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
    CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL,
                       command TEXT NOT NULL, env TEXT NOT NULL);
    CREATE TABLE results (experiment TEXT NOT NULL, model TEXT NOT NULL, defense TEXT NOT NULL,
        attack TEXT NOT NULL, eps REAL NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL,
        value REAL NOT NULL, dataset TEXT NOT NULL, norm TEXT NOT NULL, profile TEXT NOT NULL,
        n INTEGER NOT NULL, extra TEXT NOT NULL, run_id INTEGER, written REAL NOT NULL,
        UNIQUE (experiment, model, defense, attack, eps, seed, metric, dataset, norm, profile));
    INSERT INTO results VALUES ('e','m','d','pgd',0.1,0,'robust_accuracy',42.0,'','','',10,'{}',NULL,0);
    """)
    con.commit()
    con.close()
    rows = ResultStore(path).query()
    assert len(rows) == 1 and rows[0].value == 42.0 and rows[0].weights == ""


def test_a_database_locked_by_another_run_is_one_clear_error(tmp_path):
    import sqlite3

    import pytest

    from advgeom.errors import AdvgeomError
    from advgeom.results import ResultStore, Row

    path = tmp_path / "r.sqlite"
    store = ResultStore(path, timeout=0.2)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AdvgeomError, match="locked by another run"):
            store.add([Row("e", "m", "d", "a", 0.1, 0, "robust_accuracy", 1.0)])
    finally:
        holder.rollback()
        holder.close()
    store.add([Row("e", "m", "d", "a", 0.1, 0, "robust_accuracy", 1.0)])  # free again
    assert len(store.query()) == 1


def test_units_of_another_code_version_are_recomputed_unless_reused(tmp_path):
    from advgeom.results import ResultStore

    path = tmp_path / "r.sqlite"
    ResultStore(path, code="aaaa").finish_unit("u", {"x": 1})
    assert ResultStore(path, code="aaaa").unit("u") == {"x": 1}
    assert ResultStore(path, code="bbbb").unit("u") is None          # code changed: stale
    assert ResultStore(path, code="bbbb", reuse=True).unit("u") == {"x": 1}


def test_code_fingerprint_sees_edits_but_not_presentation(tmp_path):
    from advgeom.results.env import code_fingerprint

    pkg = tmp_path / "pkg"
    (pkg / "results").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "cli.py").write_text("print('hi')\n")
    first = code_fingerprint(str(pkg))
    (pkg / "cli.py").write_text("print('hello')\n")
    code_fingerprint.cache_clear()
    assert code_fingerprint(str(pkg)) == first
    (pkg / "a.py").write_text("x = 2\n")
    code_fingerprint.cache_clear()
    assert code_fingerprint(str(pkg)) != first


def test_unwritable_location_is_one_clear_error():
    import pytest

    from advgeom.errors import AdvgeomError
    from advgeom.results import ResultStore

    with pytest.raises(AdvgeomError, match="cannot create the directory"):
        ResultStore("/proc/advgeom-nope/results.sqlite")


def test_units_record_their_compute_time_and_old_units_read_as_untimed(tmp_path):
    import json

    s = ResultStore(tmp_path / "r.sqlite", code="c1")
    s.finish_unit("timed", {"x": 1}, seconds=1.23456)
    s.finish_unit("plain", {"x": 2})
    assert s.unit("timed") == {"x": 1} and s.unit_seconds("timed") == pytest.approx(1.235)
    assert s.unit("plain") == {"x": 2} and s.unit_seconds("plain") is None
    assert s.unit_seconds("missing") is None
    # a unit written before units recorded their time is still served (same code)
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        con.execute("UPDATE units SET payload = ? WHERE key = 'plain'", (json.dumps({"code": "c1", "payload": 7}),))
    assert s.unit("plain") == 7 and s.unit_seconds("plain") is None
    # another code version: neither served nor mistaken for a payload, with or without a time
    assert ResultStore(tmp_path / "r.sqlite", code="c2").unit("timed") is None
    assert ResultStore(tmp_path / "r.sqlite", code="c2", reuse=True).unit("timed") == {"x": 1}
    # one read gives both; a payload this code may not use comes back with no time either
    assert s.unit_record("timed") == ({"x": 1}, pytest.approx(1.235))
    assert ResultStore(tmp_path / "r.sqlite", code="c2").unit_record("timed") == (None, None)
    assert ResultStore(tmp_path / "r.sqlite", code="c2").unit_seconds("timed") == pytest.approx(1.235)
    assert ResultStore(tmp_path / "r.sqlite", code="c2", reuse=True).unit_record("timed") == (
        {"x": 1}, pytest.approx(1.235))
