"""A file that is not an advgeom database is refused with one line and exit status 2 and
left byte-identical; `results` and `report` open read-only and never create a database."""
import re
import sqlite3
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from advgeom.cli import app
from advgeom.errors import AdvgeomError
from advgeom.results import ResultStore, Row


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _foreign(tmp_path):
    """Another program's SQLite database (its own tables) and a 1-byte text file."""
    db = tmp_path / "other.sqlite"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE songs (title TEXT, year INTEGER); INSERT INTO songs VALUES ('a', 1999);"
                      "CREATE TABLE runs (id INTEGER);")
    con.commit()
    con.close()
    text = tmp_path / "notes.txt"
    text.write_bytes(b"x")
    odd = tmp_path / "odd.sqlite"  # a `results` table of someone else's
    con = sqlite3.connect(odd)
    con.executescript("CREATE TABLE results (name TEXT, score REAL);")
    con.close()
    return {"foreign SQLite": (db, "an SQLite database with other tables: runs, songs; left untouched"),
            "1-byte text file": (text, "not an SQLite file; left untouched"),
            "other results table": (odd, ("its results table lacks the columns attack, dataset, defense, eps, "
                                          "experiment, extra, metric, model, n, norm, profile, run_id, seed, "
                                          "value, written; left untouched"))}


COMMANDS = {
    "results": lambda db, tmp: ["results", "--db", db],
    "results --long": lambda db, tmp: ["results", "--db", db, "--long"],
    "report": lambda db, tmp: ["report", "--db", db, "--out", tmp / "site"],
    "evaluate": lambda db, tmp: ["evaluate", "--checkpoint", tmp / "missing.safetensors", "--db", db,
                                 "--root", tmp, "--no-progress"],
    "reproduce": lambda db, tmp: ["reproduce", "demo", "--db", db, "--root", tmp, "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_foreign_files_are_refused_untouched(tmp_path, command, monkeypatch):
    import advgeom.train

    # evaluate: reach the store without a checkpoint (the model and config are stubbed)
    monkeypatch.setattr(advgeom.train, "load_model", lambda path, device: None)
    monkeypatch.setattr("advgeom.train.checkpoint.load_checkpoint", lambda path: (None, {"config": {}}))
    cfg = SimpleNamespace(model="m", dataset="fake", objective="ce", dataset_kwargs={})
    monkeypatch.setattr("advgeom.config.from_dict", lambda cls, d: cfg)
    for label, (path, why) in _foreign(tmp_path).items():
        before = path.read_bytes()
        out = _run(*COMMANDS[command](path, tmp_path))
        assert out.exit_code == 2, (label, out.output)
        assert out.output == f"error: {path}: not a usable results database ({why})\n", label
        assert path.read_bytes() == before, label
    assert not (tmp_path / "site").exists()


def test_store_refuses_foreign_files_in_both_modes(tmp_path):
    for path, why in _foreign(tmp_path).values():
        before = path.read_bytes()
        for readonly in (False, True):
            with pytest.raises(AdvgeomError, match=re.escape(f"{path}: not a usable results database ({why})")):
                ResultStore(path, readonly=readonly)
        assert path.read_bytes() == before
    with pytest.raises(AdvgeomError, match="not a regular file"):
        ResultStore(tmp_path)


def test_read_only_commands_never_create_or_write(tmp_path):
    missing = tmp_path / "sub" / "none.sqlite"
    for args in (["results", "--db", missing], ["report", "--db", missing, "--out", tmp_path / "s"]):
        out = _run(*args)
        assert out.exit_code == 2
        assert out.output == f"error: no results database at {missing} (run `advgeom reproduce` or " \
                             "`advgeom evaluate` first)\n"
    assert not missing.exists() and not missing.parent.exists()
    with pytest.raises(AdvgeomError, match="^no results database at"):
        ResultStore(missing, readonly=True)
    assert not missing.parent.exists()
    # an empty file and an SQLite database with no tables are empty databases: nothing to
    # show (exit 2), and read-only commands leave them as they are
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.sqlite"
    con = sqlite3.connect(blank)
    con.execute("PRAGMA user_version = 7")  # a valid SQLite file without tables
    con.commit()
    con.close()
    for path in (empty, blank):
        before = path.read_bytes()
        for args in (["results", "--db", path], ["report", "--db", path, "--out", tmp_path / "s"]):
            out = _run(*args)
            assert out.exit_code == 2 and out.output.startswith(f"error: {path} holds no results yet"), out.output
            assert out.output.count("\n") == 1
        assert path.read_bytes() == before
    # a writer accepts both and makes them results databases
    for path in (empty, blank):
        ResultStore(path).add([Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 1.0)])
        assert [r.value for r in ResultStore(path, readonly=True).query()] == [1.0]


def test_read_only_store_reads_everything_and_writes_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.start_run("cmd", {"git_sha": "abc"})
    store.add([Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 1.0)])
    store.finish_unit("u", {"x": 1})
    store.save_report("e", "quick", 0, {"title": "t"})
    before = path.read_bytes()
    ro = ResultStore(path, readonly=True, code=store.code)
    assert [r.value for r in ro.query()] == [1.0] and ro.experiments() == ["e"]
    assert ro.runs()[0]["command"] == "cmd" and ro.unit("u") == {"x": 1}
    assert ro.reports()[0]["payload"]["title"] == "t"
    for write in (lambda: ro.start_run("c", {}), lambda: ro.add([]), lambda: ro.finish_unit("v", 1),
                  lambda: ro.save_report("e", "quick", 0, {})):
        with pytest.raises(AdvgeomError, match="^" + re.escape(f"{path}: opened read-only, cannot ")):
            write()
    assert path.read_bytes() == before
    # a database with only some of advgeom's tables (an older one) reads as empty
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, "
                "command TEXT NOT NULL, env TEXT NOT NULL)")
    con.close()
    ro = ResultStore(old, readonly=True)
    assert (ro.query(), ro.runs(), ro.reports(), ro.experiments(), ro.unit("u")) == ([], [], [], [], None)
