"""The evaluated point set is part of a row's identity: a rerun on other points adds rows
and never replaces stored ones, ``replace=True`` removes them on purpose, older databases
migrate keeping their rows, and tables and leaderboards never combine point sets."""
import html
import re
import sqlite3

import pytest
from typer.testing import CliRunner

from advgeom.cli import app
from advgeom.errors import AdvgeomError
from advgeom.results import ResultStore, Row
from advgeom.results.pivot import leaderboard, pivot
from advgeom.results.rows import point_set
from advgeom.results.site import build_site

P1000 = point_set(1000, "aaaaaaaaaaaaaaaa")   # "1000:aaaaaaaaaaaa"
P100 = point_set(100, "bbbbbbbbbbbbbbbb")


def _eval(n, points, clean, robust, **kw):
    """Rows of one evaluation of model m: clean accuracy, pgd and worst case per eps."""
    common = dict(experiment="e", model="m", defense="d", seed=0, dataset="mnist", norm="linf",
                  profile="quick", n=n, points=points, **kw)
    rows = [Row(attack="none", eps=0.0, metric="clean_accuracy", value=clean, **common)]
    for eps, v in robust.items():
        rows.append(Row(attack="pgd", eps=eps, metric="robust_accuracy", value=v,
                        extra={"kind": "iterative"}, **common))
        rows.append(Row(attack="worst_case", eps=eps, metric="robust_accuracy", value=v,
                        extra={"attacks": ["pgd"]}, **common))
    return rows


def _values(store):
    return sorted((r.n, r.points, r.attack, r.eps, r.metric, r.value) for r in store.query())


def test_point_set_format_and_row_identity():
    assert P1000 == "1000:aaaaaaaaaaaa" and P100 == "100:bbbbbbbbbbbb"
    a = Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 10.0, n=1000, points=P1000)
    b = Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 10.0, n=100, points=P100)
    assert a.key() != b.key() and a.base_key() == b.base_key()
    assert a.key() == a.base_key() + (1000, P1000)


def test_points_must_match_n(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(AdvgeomError, match=r"points '100:bbbbbbbbbbbb' must be '' or '<n>:<hash>' with n = 1000"):
        store.add([Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 1.0, n=1000, points=P100)])
    assert store.query() == []


def test_a_rerun_on_fewer_points_adds_rows_and_never_replaces(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("first", {})
    store.add(_eval(1000, P1000, 90.0, {0.1: 60.0, 0.3: 20.0}))
    store.start_run("second", {})
    store.add(_eval(100, P100, 85.0, {0.3: 30.0}))
    assert _values(store) == sorted(
        [(1000, P1000, "none", 0.0, "clean_accuracy", 90.0),
         (1000, P1000, "pgd", 0.1, "robust_accuracy", 60.0), (1000, P1000, "worst_case", 0.1, "robust_accuracy", 60.0),
         (1000, P1000, "pgd", 0.3, "robust_accuracy", 20.0), (1000, P1000, "worst_case", 0.3, "robust_accuracy", 20.0),
         (100, P100, "none", 0.0, "clean_accuracy", 85.0),
         (100, P100, "pgd", 0.3, "robust_accuracy", 30.0), (100, P100, "worst_case", 0.3, "robust_accuracy", 30.0)])
    assert store.replaced == 0
    # rows without a recorded point set: n alone keeps them apart
    store.add([Row("e", "m", "d", "fgsm", 0.3, 0, "robust_accuracy", v, n=n) for n, v in ((1000, 40.0), (100, 50.0))])
    assert sorted((r.n, r.value) for r in store.query(attack="fgsm")) == [(100, 50.0), (1000, 40.0)]
    # the same point set again: updated in place, never duplicated
    store.add(_eval(100, P100, 86.0, {0.3: 31.0}))
    assert len(store.query()) == 10
    assert [r.value for r in store.query(metric="clean_accuracy", n=100)] == [86.0]
    assert [r.value for r in store.query(metric="clean_accuracy", n=1000)] == [90.0]


def test_replace_removes_the_other_point_sets_on_purpose(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("first", {})
    store.add(_eval(1000, P1000, 90.0, {0.1: 60.0, 0.3: 20.0}))
    store.add([Row("other", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 5.0, n=1000, points=P1000)])
    store.start_run("second", {})
    # replace: the 1000-point rows of the same identity (clean, pgd and worst case at 0.3)
    # go; eps 0.1 (not rewritten) and another experiment's row stay
    assert store.add(_eval(100, P100, 85.0, {0.3: 30.0}), replace=True) == []
    assert store.replaced == 3
    assert _values(store) == sorted(
        [(1000, P1000, "pgd", 0.1, "robust_accuracy", 60.0), (1000, P1000, "worst_case", 0.1, "robust_accuracy", 60.0),
         (100, P100, "none", 0.0, "clean_accuracy", 85.0),
         (100, P100, "pgd", 0.3, "robust_accuracy", 30.0), (100, P100, "worst_case", 0.3, "robust_accuracy", 30.0),
         (1000, P1000, "pgd", 0.3, "robust_accuracy", 5.0)])
    # the rows this run wrote itself on another point set are kept (a run may measure two)
    store.add(_eval(50, point_set(50, "cccccccccccc"), 80.0, {0.3: 35.0}), replace=True)
    assert store.replaced == 3
    assert sorted({r.n for r in store.query(experiment="e", eps=0.3)}) == [50, 100]
    # the store-wide default (the CLI's --replace) applies to add and finish_unit
    again = ResultStore(tmp_path / "r.sqlite", replace=True)
    again.start_run("third", {})
    again.finish_unit("u", {}, [Row("e", "m", "d", "pgd", 0.1, 0, "robust_accuracy", 61.0, dataset="mnist",
                                    norm="linf", profile="quick", n=100, points=P100)])
    assert again.replaced == 1
    assert [(r.n, r.value) for r in again.query(experiment="e", attack="pgd", eps=0.1)] == [(100, 61.0)]


def test_worst_case_coverage_is_compared_within_one_point_set(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    base = {"experiment": "e", "model": "m", "defense": "d", "attack": "worst_case", "eps": 0.1, "seed": 0,
            "metric": "robust_accuracy"}
    store.add([Row(value=9.0, extra={"attacks": ["pgd", "fgsm"]}, n=1000, points=P1000, **base)])
    assert store.add([Row(value=38.0, extra={"attacks": ["fgsm"]}, n=100, points=P100, **base)]) == []
    assert sorted((r.attack, r.n, r.value) for r in store.query()) == [("worst_case", 100, 38.0),
                                                                       ("worst_case", 1000, 9.0)]


OLD_SCHEMAS = {
    "before weights": """
        CREATE TABLE results (experiment TEXT NOT NULL, model TEXT NOT NULL, defense TEXT NOT NULL,
            attack TEXT NOT NULL, eps REAL NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL,
            value REAL NOT NULL, dataset TEXT NOT NULL, norm TEXT NOT NULL, profile TEXT NOT NULL,
            n INTEGER NOT NULL, extra TEXT NOT NULL, run_id INTEGER, written REAL NOT NULL,
            UNIQUE (experiment, model, defense, attack, eps, seed, metric, dataset, norm, profile));
        INSERT INTO results VALUES ('e','m','d','pgd',0.3,0,'robust_accuracy',20.0,
            'mnist','linf','quick',1000,'{}',1,5);
        INSERT INTO results VALUES ('e','m','d','none',0.0,0,'clean_accuracy',90.0,
            'mnist','linf','quick',1000,'{}',1,5);
    """,
    "before points": """
        CREATE TABLE results (experiment TEXT NOT NULL, model TEXT NOT NULL, defense TEXT NOT NULL,
            attack TEXT NOT NULL, eps REAL NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL,
            value REAL NOT NULL, dataset TEXT NOT NULL, norm TEXT NOT NULL, profile TEXT NOT NULL,
            n INTEGER NOT NULL, extra TEXT NOT NULL, run_id INTEGER REFERENCES runs(run_id),
            written REAL NOT NULL,
            weights TEXT NOT NULL DEFAULT '',
            UNIQUE (experiment, model, defense, attack, eps, seed, metric, dataset, norm, profile, weights));
        INSERT INTO results VALUES ('e','m','d','pgd',0.3,0,'robust_accuracy',20.0,
            'mnist','linf','quick',1000,'{}',1,5,'w1');
        INSERT INTO results VALUES ('e','m','d','none',0.0,0,'clean_accuracy',90.0,
            'mnist','linf','quick',1000,'{}',1,5,'w1');
    """,
}


@pytest.mark.parametrize("schema", sorted(OLD_SCHEMAS))
def test_old_databases_migrate_keeping_their_rows(tmp_path, schema):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, "
                      "command TEXT NOT NULL, env TEXT NOT NULL);"
                      "INSERT INTO runs VALUES (1, 0, 'advgeom evaluate', '{}');" + OLD_SCHEMAS[schema])
    con.close()
    weights = "w1" if schema == "before points" else ""
    # read-only: the old schema is read as it is, the file is not migrated
    before = path.read_bytes()
    ro = ResultStore(path, readonly=True)
    assert sorted((r.metric, r.value, r.n, r.points, r.weights) for r in ro.query()) == [
        ("clean_accuracy", 90.0, 1000, "", weights), ("robust_accuracy", 20.0, 1000, "", weights)]
    assert path.read_bytes() == before
    store = ResultStore(path)
    rows = store.query_with_runs()
    assert sorted((r.metric, r.value, r.n, r.points, r.weights, run) for r, run in rows) == [
        ("clean_accuracy", 90.0, 1000, "", weights, 1), ("robust_accuracy", 20.0, 1000, "", weights, 1)]
    con = sqlite3.connect(path)
    sql = con.execute("SELECT sql FROM sqlite_master WHERE name = 'results'").fetchone()[0]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "UNIQUE (experiment, model, defense, attack, eps, seed, metric, dataset, norm, profile, weights, " \
           "n, points)" in sql
    assert tables == {"runs", "results", "units", "reports", "sqlite_sequence"}
    # a rerun on 100 points now adds rows beside the migrated ones
    store.add([Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 30.0, dataset="mnist", norm="linf",
                   profile="quick", n=100, points=P100, weights=weights)])
    assert sorted((r.n, r.value) for r in store.query(attack="pgd")) == [(100, 30.0), (1000, 20.0)]
    ResultStore(path)  # opening again: nothing left to migrate
    assert len(ResultStore(path).query()) == 3


def test_a_failed_migration_leaves_the_old_table(tmp_path, monkeypatch):
    from advgeom.results import schema

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMAS["before points"])
    con.close()
    monkeypatch.setattr(schema, "RESULTS_TABLE", "CREATE TABLE results (broken")
    with pytest.raises(AdvgeomError):
        ResultStore(path)
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    n = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    con.close()
    assert tables == {"results"} and n == 2  # rolled back: no half-renamed table


# ---------------------------------------------------------------------------
# tables and the leaderboard


def _mixed_store(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.start_run("advgeom evaluate --n 1000", {"git_sha": "sha1000"})
    store.add(_eval(1000, P1000, 90.0, {0.1: 60.0, 0.3: 20.0}))
    store.start_run("advgeom evaluate --n 100", {"git_sha": "sha100"})
    store.add(_eval(100, P100, 85.0, {0.3: 30.0}))
    return store


def test_pivot_makes_one_table_per_point_set(tmp_path):
    pivots = pivot(_mixed_store(tmp_path).query())
    assert [(p.key["n"], p.key["points"]) for p in pivots] == [(1000, P1000), (100, P100)]
    big, small = pivots
    assert big.eps == [0.1, 0.3] and big.lines == [("pgd", [60.0, 20.0]), ("worst_case", [60.0, 20.0])]
    assert small.eps == [0.3] and small.lines == [("pgd", [30.0]), ("worst_case", [30.0])]
    assert (big.clean, small.clean) == (90.0, 85.0)
    assert big.title.splitlines()[0] == "e · m · d · mnist linf (quick, seed 0, n 1000, points aaaaaaaa)"
    assert small.title.splitlines()[0] == "e · m · d · mnist linf (quick, seed 0, n 100, points bbbbbbbb)"
    # n alone (no recorded point set) splits too, and says n
    rows = [Row("x", "m", "d", "pgd", 0.3, 0, "robust_accuracy", v, n=n) for n, v in ((1000, 20.0), (100, 30.0))]
    assert [(p.key["n"], p.lines, p.title.splitlines()[0]) for p in pivot(rows)] == [
        (1000, [("pgd", [20.0])], "x · m · d (no profile, seed 0, n 1000)"),
        (100, [("pgd", [30.0])], "x · m · d (no profile, seed 0, n 100)")]


def test_leaderboard_keeps_point_sets_in_separate_rows(tmp_path):
    store = _mixed_store(tmp_path)
    boards = leaderboard(store.query_with_runs(), {r["run_id"]: r for r in store.runs()})
    assert [(b.eps, [(e.key["n"], e.clean, e.paper.value, e.worst.value, e.commit) for e in b.entries])
            for b in boards] == [(0.1, [(1000, 90.0, 60.0, 60.0, "sha1000")]),
                                 (0.3, [(100, 85.0, 30.0, 30.0, "sha100"), (1000, 90.0, 20.0, 20.0, "sha1000")])]


def test_site_and_results_command_say_n(tmp_path):
    store = _mixed_store(tmp_path)
    index = build_site(store, tmp_path / "site")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>|<style.*?</style>", "",
                                                                   index.read_text(), flags=re.DOTALL))).split())
    assert ("e m d quick 0 100 points bbbbbbbb 85.00 [76.7, 90.7] 30.00 [21.9, 39.6] pgd — "
            "30.00 [21.9, 39.6] no checks sha100") in text
    assert ("e m d quick 0 1000 points aaaaaaaa 90.00 [88.0, 91.7] 20.00 [17.6, 22.6] pgd — 20.00 [17.6, 22.6] "
            "no checks sha1000") in text
    page = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", (tmp_path / "site" / "experiments" / "e.html")
                                         .read_text())).split())
    assert "m · d · mnist · linf (quick, seed 0, n 1000, points aaaaaaaa)" in page
    assert "m · d · mnist · linf (quick, seed 0, n 100, points bbbbbbbb)" in page
    out = CliRunner().invoke(app, ["results", "--db", str(store.path)])
    assert out.exit_code == 0, out.output
    assert "e · m · d · mnist linf (quick, seed 0, n 1000, points aaaaaaaa)" in out.output
    assert "e · m · d · mnist linf (quick, seed 0, n 100, points bbbbbbbb)" in out.output
    assert re.search(r"pgd\s+60\.00\s+20\.00", out.output) and re.search(r"pgd\s+30\.00\s*\n", out.output)
