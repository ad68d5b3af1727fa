"""The results database's schema and what opening it checks: an existing file must be
an SQLite database with no tables or advgeom's (anything else is refused and left
byte-identical), a read-only open needs nothing but reading, and a ``results`` table of
an older schema (before ``weights``, or before the point set ``n``/``points`` joined its
UNIQUE key) is rebuilt in one transaction, keeping every row."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from advgeom.errors import AdvgeomError
from advgeom.results.rows import KEY_COLUMNS

RESULTS_TABLE = f"""
CREATE TABLE IF NOT EXISTS results (
    experiment TEXT NOT NULL, model TEXT NOT NULL, defense TEXT NOT NULL,
    attack TEXT NOT NULL, eps REAL NOT NULL, seed INTEGER NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, dataset TEXT NOT NULL,
    norm TEXT NOT NULL, profile TEXT NOT NULL, n INTEGER NOT NULL, extra TEXT NOT NULL,
    run_id INTEGER REFERENCES runs(run_id), written REAL NOT NULL,
    weights TEXT NOT NULL DEFAULT '', points TEXT NOT NULL DEFAULT '',
    UNIQUE ({", ".join(KEY_COLUMNS)})
)"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    command TEXT NOT NULL,
    env TEXT NOT NULL
);
{RESULTS_TABLE};
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY, payload TEXT NOT NULL, run_id INTEGER, written REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    experiment TEXT NOT NULL, profile TEXT NOT NULL, seed INTEGER NOT NULL,
    payload TEXT NOT NULL, run_id INTEGER, written REAL NOT NULL,
    UNIQUE (experiment, profile, seed)
);
"""
TABLES = frozenset({"runs", "results", "units", "reports"})
# the columns of the first ``results`` table: a table that has them is advgeom's (any schema)
_RESULT_COLUMNS_V1 = frozenset({"experiment", "model", "defense", "attack", "eps", "seed", "metric",
                                "value", "dataset", "norm", "profile", "n", "extra", "run_id", "written"})
_SQLITE_MAGIC = b"SQLite format 3\x00"


def read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only (SQLite never creates or writes it)."""
    return f"{path.resolve().as_uri()}?mode=ro"


def explain(e: sqlite3.Error, timeout: float) -> str:
    """Why SQLite refused an operation, in words for a one-line error."""
    msg = str(e).lower()
    if "readonly" in msg or "read-only" in msg:
        return "the file or its directory is read-only"
    if "locked" in msg or "busy" in msg:
        return f"locked by another run for more than {timeout:g} s"
    return "read-only, locked by another run, or not writable"


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    quoted = '"' + table.replace('"', '""') + '"'
    return [r[1] for r in con.execute(f"PRAGMA table_info({quoted})")]


def inspect(path: Path, timeout: float) -> dict[str, list[str]] | None:
    """The tables (name -> columns) of the database at ``path``; ``None`` when there is
    no file. Opens it read-only and raises :class:`AdvgeomError`, touching nothing, unless
    it is an SQLite database with no tables or advgeom's (``results`` with its columns,
    or only advgeom's table names)."""
    if not path.exists():
        return None
    if not path.is_file():
        raise AdvgeomError(f"{path}: not a usable results database (not a regular file)")
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise AdvgeomError(f"{path}: cannot read the results database ({e.strerror or e})") from None
    if not head:
        return {}  # an empty file is an empty SQLite database
    if head != _SQLITE_MAGIC:
        raise AdvgeomError(f"{path}: not a usable results database (not an SQLite file; left untouched)")
    try:
        con = sqlite3.connect(read_only_uri(path), uri=True, timeout=timeout)
    except sqlite3.Error as e:
        raise AdvgeomError(f"{path}: cannot open the results database ({e})") from None
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {t: _columns(con, t) for t in names if not t.startswith("sqlite_")}
    except sqlite3.OperationalError as e:
        raise AdvgeomError(f"{path}: cannot read the results database ({e}; {explain(e, timeout)})") from None
    except sqlite3.DatabaseError as e:
        raise AdvgeomError(f"{path}: not a usable results database ({e}; left untouched)") from None
    finally:
        con.close()
    results = tables.get("results")
    if results is not None and _RESULT_COLUMNS_V1 <= set(results):
        return tables
    if results is None and set(tables) <= TABLES:
        return tables
    what = (f"its results table lacks the columns {', '.join(sorted(_RESULT_COLUMNS_V1 - set(results)))}"
            if results is not None else f"an SQLite database with other tables: {', '.join(sorted(tables))}")
    raise AdvgeomError(f"{path}: not a usable results database ({what}; left untouched)")


def migrate(con: sqlite3.Connection) -> None:
    """A ``results`` table of an older schema (before ``weights``, or before the point
    set ``n``/``points`` joined the UNIQUE key): SQLite cannot alter a constraint, so the
    table is rebuilt in one transaction, keeping every row (missing columns get ``''``)."""
    if not _columns(con, "results") or "points" in _columns(con, "results"):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        cols = _columns(con, "results")  # again, under the write lock: another run may have done it
        if "points" not in cols:
            con.execute("ALTER TABLE results RENAME TO results_before_points")
            con.execute(RESULTS_TABLE)
            new = set(_columns(con, "results"))
            names = ", ".join(c for c in cols if c in new)
            con.execute(f"INSERT INTO results ({names}) SELECT {names} FROM results_before_points")
            con.execute("DROP TABLE results_before_points")
        con.commit()
    except BaseException:
        con.rollback()
        raise


