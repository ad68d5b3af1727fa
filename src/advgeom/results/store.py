"""The SQLite results store (``runs/results.sqlite`` by default).

Rows are written in one transaction per call, so a killed run never leaves a
half-written batch. A row's identity (``Row.key``, the table's UNIQUE key) includes
the evaluated point set (``n`` and ``points``): writing a row of the same identity
again replaces its value (reruns update, never duplicate), while a rerun on another
point set adds its rows beside the stored ones. ``add(..., replace=True)`` (the CLI's
``--replace``) removes, on purpose, the stored rows of the same identity on any other
point set. Finished units of work are recorded in a ``units`` table so that runs can
skip them on resume. An experiment's report (comparisons with the paper, notes,
figures as PNG bytes) is kept in a ``reports`` table so that ``advgeom report`` needs
nothing but the database.

An existing file is used only if it is an SQLite database that holds no tables or
advgeom's (``results`` with its columns): anything else (a text file, another
program's database) is refused and left byte-identical. ``readonly=True`` opens an
existing database for reading only (``advgeom results``, ``advgeom report``): nothing
is created, migrated or written. Tables are only ever added; a ``results`` table of
an older schema is rebuilt in one transaction, keeping its rows.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from advgeom.errors import AdvgeomError
from advgeom.results.rows import (BASE_KEY_COLUMNS, COLUMNS, KEY_COLUMNS, Row, check_row,
                                  row_from_record)
from advgeom.results.schema import SCHEMA, TABLES, explain, inspect, migrate, read_only_uri

DEFAULT_PATH = Path("runs") / "results.sqlite"


UNIT_FIELDS = frozenset({"code", "payload", "seconds"})   # a stored unit's JSON wrapper


class ResultStore:
    """Tidy rows in SQLite with the environment of each run.

    ``readonly``: open an existing database for reading (never create, migrate or
    write it). ``replace``: every write first removes the stored rows of the same
    identity on another point set (see :meth:`add`)."""

    def __init__(self, path: str | Path = DEFAULT_PATH, timeout: float = 30.0, *,
                 reuse: bool = False, code: str | None = None, readonly: bool = False,
                 replace: bool = False) -> None:
        from advgeom.results.env import code_fingerprint

        self.path = Path(path)
        self.timeout = float(timeout)
        self.readonly = bool(readonly)
        self.replace = bool(replace)  # default of add(replace=...) and finish_unit
        self.replaced = 0             # rows removed on purpose by replace, over this store's life
        self.code = code or code_fingerprint()   # the code version that keys finished units
        self.reuse = bool(reuse)                 # True: accept units finished by other code
        self.run_id: int | None = None
        tables = inspect(self.path, self.timeout)
        if self.readonly:
            if tables is None:
                raise AdvgeomError(f"no results database at {self.path}")
            self._tables = frozenset(tables)
            return
        if tables is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise AdvgeomError(f"cannot create the directory of the results database "
                                   f"{self.path}: {e.strerror or e}") from None
        with self._connect() as con:
            migrate(con)
            con.executescript(SCHEMA)
        self._tables = TABLES

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = (sqlite3.connect(read_only_uri(self.path), uri=True, timeout=self.timeout)
                   if self.readonly else sqlite3.connect(self.path, timeout=self.timeout))
        except sqlite3.Error as e:
            raise AdvgeomError(f"{self.path}: cannot open the results database ({e})") from None
        try:
            with con:  # one transaction: commit on success, rollback on error
                yield con
        except sqlite3.OperationalError as e:
            raise AdvgeomError(f"{self.path}: cannot {'read' if self.readonly else 'write'} the results "
                               f"database ({e}; {explain(e, self.timeout)})") from None
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:  # integrity, programming errors: bugs, not the file
                raise
            raise AdvgeomError(f"{self.path}: not a usable results database ({e})") from None
        finally:
            con.close()

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise AdvgeomError(f"{self.path}: opened read-only, cannot {what}")

    # -- runs ---------------------------------------------------------------
    def start_run(self, command: str, env: dict[str, str]) -> int:
        """Record a run (command + environment); later writes are attributed to it.
        Raises :class:`AdvgeomError` (one line) when the database cannot be written."""
        self._writable("record a run")
        try:
            with self._connect() as con:
                cur = con.execute("INSERT INTO runs (started, command, env) VALUES (?, ?, ?)",
                                  (time.time(), command, json.dumps(env, sort_keys=True)))
                self.run_id = int(cur.lastrowid)
        except AdvgeomError as e:
            raise AdvgeomError(f"cannot record the run: {e}") from None
        return self.run_id

    def runs(self) -> list[dict[str, Any]]:
        if "runs" not in self._tables:
            return []
        with self._connect() as con:
            rows = con.execute("SELECT run_id, started, command, env FROM runs ORDER BY run_id").fetchall()
        return [{"run_id": r[0], "started": r[1], "command": r[2], "env": json.loads(r[3])} for r in rows]

    # -- rows ---------------------------------------------------------------
    def _insert(self, con: sqlite3.Connection, rows: list[Row]) -> None:
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        now = time.time()
        con.executemany(
            f"INSERT OR REPLACE INTO results ({cols}, run_id, written) VALUES ({marks}, ?, ?)",
            [(*[json.dumps(r.extra, sort_keys=True) if c == "extra" else getattr(r, c)
                for c in COLUMNS], self.run_id, now) for r in rows],
        )

    def add(self, rows: Iterable[Row], *, replace: bool | None = None) -> list[str]:
        """Insert ``rows`` in one transaction (all or nothing); a stored row of the same
        identity (:meth:`Row.key`, point set included) is updated, rows of the same
        identity on another point set (``n``/``points``) stay beside them.

        ``replace`` (default: the store's :attr:`replace`, the CLI's ``--replace``): first
        remove, on purpose, the stored rows that share a written row's identity but for
        the point set (:meth:`Row.base_key`) and were measured on another point set,
        except those of this store's own run (:attr:`run_id`); the count is added to
        :attr:`replaced`.

        A worst case never silently loses coverage: a ``worst_case`` row over attacks
        that do not include every attack of the stored one (same point set) is written
        under the label ``worst_case[a+b]`` instead, and the returned notices (also
        warned) say so."""
        self._writable("write rows")
        rows = list(rows)
        for r in rows:
            check_row(r)
        replace = self.replace if replace is None else bool(replace)
        with self._connect() as con:
            removed = _remove_other_point_sets(con, rows, self.run_id) if replace else 0
            rows, notices = _keep_stronger_worst_case(con, rows)
            self._insert(con, rows)
        self.replaced += removed  # counted once the transaction is committed
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
        if "results" not in self._tables:
            return []
        where = " AND ".join(f"{k} = ?" for k in filters) or "1"
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            recs = con.execute(
                f"SELECT * FROM results WHERE {where} ORDER BY experiment, model, defense, attack, eps, "
                "metric, n DESC", tuple(filters.values()),
            ).fetchall()
        return [(row_from_record(dict(r)), r["run_id"]) for r in recs]

    def experiments(self) -> list[str]:
        if "results" not in self._tables:
            return []
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT experiment FROM results ORDER BY 1")]

    # -- experiment reports -------------------------------------------------
    def save_report(self, experiment: str, profile: str, seed: int, payload: dict[str, Any],
                    figures: dict[str, bytes] | None = None, run_id: int | None = None) -> None:
        """Store an experiment's report (JSON ``payload``: comparisons, notes, ...) and its
        figures (``{file name: PNG bytes}``), replacing the one of the same
        (experiment, profile, seed)."""
        self._writable("store a report")
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
        if "reports" not in self._tables:
            return []
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
        return self.unit_record(key)[0]

    def unit_seconds(self, key: str) -> float | None:
        """The compute time a finished unit recorded (``None``: none recorded, e.g. a unit
        written before units recorded their time, or no such unit)."""
        return self.unit_record(key, usable_only=False)[1]

    def unit_record(self, key: str, usable_only: bool = True) -> tuple[Any | None, float | None]:
        """One read of a unit: its payload as :meth:`unit` gives it and the compute time it
        recorded (as :meth:`unit_seconds`); with ``usable_only`` both are ``None`` when the
        payload is not usable by this code version."""
        if "units" not in self._tables:
            return None, None
        with self._connect() as con:
            rec = con.execute("SELECT payload FROM units WHERE key = ?", (key,)).fetchone()
        if rec is None:
            return None, None
        data = json.loads(rec[0])
        versioned = isinstance(data, dict) and {"code", "payload"} <= set(data) <= UNIT_FIELDS
        seconds = data.get("seconds") if versioned else None
        seconds = float(seconds) if isinstance(seconds, (int, float)) else None
        if versioned and data["code"] == self.code:
            return data["payload"], seconds
        if self.reuse:
            return (data["payload"] if versioned else data), seconds
        return None, (None if usable_only else seconds)

    def finish_unit(self, key: str, payload: Any, rows: Iterable[Row] = (), *,
                    seconds: float | None = None) -> None:
        """Store a unit's payload (with the code version and, when given, the ``seconds``
        it took to compute) and its rows atomically (rows as :meth:`add` with the store's
        :attr:`replace`)."""
        self._writable("store a unit of work")
        rows = list(rows)
        for r in rows:
            check_row(r)
        with self._connect() as con:
            removed = _remove_other_point_sets(con, rows, self.run_id) if self.replace and rows else 0
            self._insert(con, rows)
            con.execute("INSERT OR REPLACE INTO units (key, payload, run_id, written) VALUES (?, ?, ?, ?)",
                        (key, json.dumps({"code": self.code, "payload": payload,
                                          **({} if seconds is None else {"seconds": round(float(seconds), 3)})}),
                         self.run_id,
                         time.time()))
        self.replaced += removed


# ---------------------------------------------------------------------------
# writing: replace on purpose, worst-case coverage

WORST = "worst_case"


def _remove_other_point_sets(con: sqlite3.Connection, rows: list[Row], run_id: int | None) -> int:
    """Delete the stored rows that share a row's identity but for the point set
    (:meth:`Row.base_key`, another ``n``/``points``), except those of run ``run_id`` (one
    run may measure several point sets); returns how many. Rows of the same point set
    need no removal: writing updates them."""
    where = " AND ".join(f"{c} = ?" for c in BASE_KEY_COLUMNS) + " AND NOT (n = ? AND points = ?)"
    if run_id is not None:
        where += " AND (run_id IS NULL OR run_id != ?)"
    removed = 0
    for key in dict.fromkeys(r.key() for r in rows):
        cur = con.execute(f"DELETE FROM results WHERE {where}", key + (() if run_id is None else (run_id,)))
        removed += max(cur.rowcount, 0)
    return removed


def _keep_stronger_worst_case(con: sqlite3.Connection, rows: list[Row]) -> tuple[list[Row], list[str]]:
    out, notices = [], []
    where = " AND ".join(f"{c} = ?" for c in KEY_COLUMNS)
    for r in rows:
        if r.attack == WORST and "attacks" in r.extra:
            rec = con.execute(f"SELECT extra FROM results WHERE {where}", r.key()).fetchone()
            old = set(json.loads(rec[0]).get("attacks", [])) if rec else set()
            new = set(r.extra["attacks"])
            if old and not old <= new:
                label = f"{WORST}[{'+'.join(sorted(new))}]"
                notices.append(f"kept the stored worst case over {', '.join(sorted(old))} for "
                               f"{r.model}/{r.defense} at eps {r.eps:g}; this run's worst case over "
                               f"{', '.join(sorted(new))} is stored as {label!r}")
                r = _replace(r, attack=label)
        out.append(r)
    return out, notices


def open_store(path: str | Path, *, reuse: bool = False, replace: bool = False) -> ResultStore:
    """The store at ``path``, opened by every rank under torchrun: rank 0 creates (or
    migrates) it first, the others open it after a barrier, to read finished units
    (they never write; :mod:`advgeom.distributed`). One process: ``ResultStore(path)``.
    ``replace``: see :meth:`ResultStore.add`."""
    from advgeom.distributed import barrier, world

    store = ResultStore(path, reuse=reuse, replace=replace) if world().main else None
    barrier()
    return store if store is not None else ResultStore(path, reuse=reuse, replace=replace)
