"""The SQLite results store (``runs/results.sqlite`` by default).

Rows are written in one transaction per call, so a killed run never leaves a
half-written batch. A row's identity (``Row.key``) is unique: writing it again
replaces the old value (reruns update, never duplicate). Finished units of work
are recorded in a ``units`` table so that runs can skip them on resume. An
experiment's report (comparisons with the paper, notes, figures as PNG bytes) is
kept in a ``reports`` table so that ``advgeom report`` needs nothing but the database.
Tables are only ever added (``CREATE TABLE IF NOT EXISTS``): older databases open as is.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from dataclasses import replace
from typing import Any, Iterator

from advgeom.errors import AdvgeomError
from advgeom.results.rows import COLUMNS, Row, check_row, row_from_record

DEFAULT_PATH = Path("runs") / "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    command TEXT NOT NULL,
    env TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    experiment TEXT NOT NULL, model TEXT NOT NULL, defense TEXT NOT NULL,
    attack TEXT NOT NULL, eps REAL NOT NULL, seed INTEGER NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, dataset TEXT NOT NULL,
    norm TEXT NOT NULL, profile TEXT NOT NULL, n INTEGER NOT NULL, extra TEXT NOT NULL,
    run_id INTEGER REFERENCES runs(run_id), written REAL NOT NULL,
    weights TEXT NOT NULL DEFAULT '',
    UNIQUE (experiment, model, defense, attack, eps, seed, metric, dataset, norm, profile, weights)
);
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY, payload TEXT NOT NULL, run_id INTEGER, written REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    experiment TEXT NOT NULL, profile TEXT NOT NULL, seed INTEGER NOT NULL,
    payload TEXT NOT NULL, run_id INTEGER, written REAL NOT NULL,
    UNIQUE (experiment, profile, seed)
);
"""


class ResultStore:
    """Tidy rows in SQLite with the environment of each run."""

    def __init__(self, path: str | Path = DEFAULT_PATH, timeout: float = 30.0, *,
                 reuse: bool = False, code: str | None = None) -> None:
        from advgeom.results.env import code_fingerprint

        self.path = Path(path)
        self.timeout = float(timeout)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AdvgeomError(f"cannot create the directory of the results database "
                               f"{self.path}: {e.strerror or e}") from None
        self.code = code or code_fingerprint()   # the code version that keys finished units
        self.reuse = bool(reuse)                 # True: accept units finished by other code
        try:
            with self._connect() as con:
                _migrate(con)
                con.executescript(_SCHEMA)
        except sqlite3.OperationalError as e:
            raise AdvgeomError(f"{self.path}: cannot open the results database ({e}; read-only, "
                               f"locked by another run, or not writable)") from None
        except sqlite3.DatabaseError as e:
            raise AdvgeomError(f"{self.path}: not a usable results database ({e})") from None
        self.run_id: int | None = None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout)
        except sqlite3.Error as e:
            raise AdvgeomError(f"{self.path}: cannot open the results database ({e})") from None
        try:
            with con:  # one transaction: commit on success, rollback on error
                yield con
        except sqlite3.OperationalError as e:
            raise AdvgeomError(f"{self.path}: cannot write the results database ({e}; read-only, "
                               f"or locked by another run for more than {self.timeout:g} s)") from None
        finally:
            con.close()

    # -- runs ---------------------------------------------------------------
    def start_run(self, command: str, env: dict[str, str]) -> int:
        """Record a run (command + environment); later writes are attributed to it."""
        with self._connect() as con:
            cur = con.execute("INSERT INTO runs (started, command, env) VALUES (?, ?, ?)",
                              (time.time(), command, json.dumps(env, sort_keys=True)))
            self.run_id = int(cur.lastrowid)
        return self.run_id

    def runs(self) -> list[dict[str, Any]]:
        with self._connect() as con:
            rows = con.execute("SELECT run_id, started, command, env FROM runs ORDER BY run_id").fetchall()
        return [{"run_id": r[0], "started": r[1], "command": r[2], "env": json.loads(r[3])} for r in rows]

    # -- rows ---------------------------------------------------------------
    def _insert(self, con: sqlite3.Connection, rows: list[Row]) -> None:
        for r in rows:
            check_row(r)
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        now = time.time()
        con.executemany(
            f"INSERT OR REPLACE INTO results ({cols}, run_id, written) VALUES ({marks}, ?, ?)",
            [(*[json.dumps(r.extra, sort_keys=True) if c == "extra" else getattr(r, c)
                for c in COLUMNS], self.run_id, now) for r in rows],
        )

    def add(self, rows: list[Row]) -> list[str]:
        """Insert or replace ``rows`` in one transaction (all or nothing).

        A worst case never silently loses coverage: a ``worst_case`` row over attacks
        that do not include every attack of the stored one is written under the label
        ``worst_case[a+b]`` instead, and the returned notices (also warned) say so."""
        with self._connect() as con:
            rows, notices = _keep_stronger_worst_case(con, list(rows))
            self._insert(con, rows)
        for note in notices:
            warnings.warn(note, UserWarning, stacklevel=2)
        return notices

    def query(self, **filters: Any) -> list[Row]:
        """Rows whose columns equal the given values (e.g. ``experiment="demo"``)."""
        return [row for row, _ in self.query_with_runs(**filters)]

    def query_with_runs(self, **filters: Any) -> list[tuple[Row, int | None]]:
        """Like :meth:`query`, each row with the id of the run that wrote it (see :meth:`runs`)."""
        bad = [k for k in filters if k not in COLUMNS]
        if bad:
            raise AdvgeomError(f"unknown result column(s) {bad}; columns: {', '.join(COLUMNS)}")
        where = " AND ".join(f"{k} = ?" for k in filters) or "1"
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            recs = con.execute(
                f"SELECT * FROM results WHERE {where} ORDER BY experiment, model, defense, attack, eps, metric",
                tuple(filters.values()),
            ).fetchall()
        return [(row_from_record(dict(r)), r["run_id"]) for r in recs]

    def experiments(self) -> list[str]:
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT experiment FROM results ORDER BY 1")]

    # -- experiment reports -------------------------------------------------
    def save_report(self, experiment: str, profile: str, seed: int, payload: dict[str, Any],
                    figures: dict[str, bytes] | None = None, run_id: int | None = None) -> None:
        """Store an experiment's report (JSON ``payload``: comparisons, notes, ...) and its
        figures (``{file name: PNG bytes}``), replacing the one of the same
        (experiment, profile, seed)."""
        data = dict(payload, figures={k: base64.b64encode(v).decode("ascii")
                                      for k, v in (figures or {}).items()})
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO reports (experiment, profile, seed, payload, run_id, written) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (experiment, profile, int(seed), json.dumps(data, sort_keys=True),
                         self.run_id if run_id is None else run_id, time.time()))

    def reports(self) -> list[dict[str, Any]]:
        """Stored reports: ``experiment``, ``profile``, ``seed``, ``run_id``, ``written``,
        ``payload`` (dict) and ``figures`` (``{file name: PNG bytes}``)."""
        with self._connect() as con:
            recs = con.execute("SELECT experiment, profile, seed, payload, run_id, written FROM reports "
                               "ORDER BY experiment, profile, seed").fetchall()
        out = []
        for exp, profile, seed, payload, run_id, written in recs:
            data = json.loads(payload)
            figs = {k: base64.b64decode(v) for k, v in data.pop("figures", {}).items()}
            out.append({"experiment": exp, "profile": profile, "seed": seed, "run_id": run_id,
                        "written": written, "payload": data, "figures": figs})
        return out

    # -- resumable units ----------------------------------------------------
    def unit(self, key: str) -> Any | None:
        """The stored payload of a finished unit of work, or ``None`` when there is none
        or it was produced by another code version (:attr:`code`; a unit written before
        units recorded it counts as another version) unless :attr:`reuse` is set."""
        with self._connect() as con:
            rec = con.execute("SELECT payload FROM units WHERE key = ?", (key,)).fetchone()
        if rec is None:
            return None
        data = json.loads(rec[0])
        versioned = isinstance(data, dict) and set(data) == {"code", "payload"}
        if versioned and data["code"] == self.code:
            return data["payload"]
        if self.reuse:
            return data["payload"] if versioned else data
        return None

    def finish_unit(self, key: str, payload: Any, rows: list[Row] = ()) -> None:
        """Store a unit's payload (with the code version) and its rows atomically."""
        with self._connect() as con:
            self._insert(con, list(rows))
            con.execute("INSERT OR REPLACE INTO units (key, payload, run_id, written) VALUES (?, ?, ?, ?)",
                        (key, json.dumps({"code": self.code, "payload": payload}), self.run_id,
                         time.time()))


# ---------------------------------------------------------------------------
# schema migration and worst-case coverage


def _migrate(con: sqlite3.Connection) -> None:
    """Databases written before rows carried a ``weights`` column: rebuild ``results``
    with it (old rows get ``weights = ''``) inside the opening transaction."""
    cols = [r[1] for r in con.execute("PRAGMA table_info(results)")]
    if not cols or "weights" in cols:
        return
    con.execute("ALTER TABLE results RENAME TO results_before_weights")
    con.executescript(_SCHEMA.split("CREATE TABLE IF NOT EXISTS units")[0])
    names = ", ".join(cols)
    con.execute(f"INSERT INTO results ({names}, weights) SELECT {names}, '' FROM results_before_weights")
    con.execute("DROP TABLE results_before_weights")


WORST = "worst_case"


def _keep_stronger_worst_case(con: sqlite3.Connection, rows: list[Row]) -> tuple[list[Row], list[str]]:
    out, notices = [], []
    for r in rows:
        if r.attack == WORST and "attacks" in r.extra:
            rec = con.execute(
                "SELECT extra FROM results WHERE experiment=? AND model=? AND defense=? AND attack=? "
                "AND eps=? AND seed=? AND metric=? AND dataset=? AND norm=? AND profile=? AND weights=?",
                r.key()).fetchone()
            old = set(json.loads(rec[0]).get("attacks", [])) if rec else set()
            new = set(r.extra["attacks"])
            if old and not old <= new:
                label = f"{WORST}[{'+'.join(sorted(new))}]"
                notices.append(f"kept the stored worst case over {', '.join(sorted(old))} for "
                               f"{r.model}/{r.defense} at eps {r.eps:g}; this run's worst case over "
                               f"{', '.join(sorted(new))} is stored as {label!r}")
                r = replace(r, attack=label)
        out.append(r)
    return out, notices


def open_store(path: str | Path, *, reuse: bool = False) -> ResultStore:
    """The store at ``path``, opened by every rank under torchrun: rank 0 creates (or
    migrates) it first, the others open it after a barrier, to read finished units
    (they never write; :mod:`advgeom.distributed`). One process: ``ResultStore(path)``."""
    from advgeom.distributed import barrier, world

    store = ResultStore(path, reuse=reuse) if world().main else None
    barrier()
    return store if store is not None else ResultStore(path, reuse=reuse)
