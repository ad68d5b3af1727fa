"""Pivoted views of tidy rows, as pure functions of rows: one table per stored
evaluation (rows attacks with the worst case last, columns eps) and a leaderboard per
(dataset, threat model, eps) in the manner of RobustBench (Croce et al. 2021), every
number with the verdict of the evaluation's sanity checks (Carlini et al. 2019).

An evaluation is identified by :data:`ENTRY` (plus dataset and norm), which includes
the identity of the evaluated weights and of the evaluated point set (``n`` and
``points``): two checkpoints of one architecture are two entries, and so are two point
sets of one model (a rerun on fewer points, a suite run on a subset). A table or a
leaderboard row therefore never combines numbers measured on different points, and
each says its n.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from advgeom.results.rows import Row
from advgeom.stats import interval_text

ENTRY: tuple[str, ...] = ("experiment", "model", "defense", "profile", "seed", "weights", "n", "points")
GROUP: tuple[str, ...] = ENTRY + ("dataset", "norm")
WORST = "worst_case"
CHECK_PREFIX = "check:"
COST_METRICS = frozenset({"forward_passes", "backward_passes"})
SUITE_PREFIXES = ("standard", "suite")
WHITE_BOX_KINDS = frozenset({"single_step", "iterative", "unknown", ""})


# ---------------------------------------------------------------------------
# one name per evaluated weights

# The experiment ``advgeom evaluate --checkpoint`` names its rows by (when the store
# knows the weights under no experiment's name).
CHECKPOINT_EXPERIMENT = "evaluate"


def weights_names(rows: Iterable[Row]) -> dict[str, tuple[str, str, str]]:
    """``{weights: (experiment, model, profile)}``: the name an experiment gave each stored
    set of weights (the first in name order when several experiments share a cached
    model). Weights known only from ``advgeom evaluate --checkpoint`` get none."""
    names: dict[str, tuple[str, str, str]] = {}
    for r in sorted(rows, key=lambda r: (r.experiment, r.model, r.profile)):
        if r.weights and r.experiment != CHECKPOINT_EXPERIMENT:
            names.setdefault(r.weights, (r.experiment, r.model, r.profile))
    return names


def one_name(rows: Iterable[Row]) -> list[Row]:
    """``rows`` with every checkpoint evaluation's rows (experiment
    :data:`CHECKPOINT_EXPERIMENT`) renamed to the experiment, model and profile that own
    the same weights (:func:`weights_names`): one set of weights is one entry under one
    name in every table, however it was evaluated. Rows are never dropped."""
    rows = list(rows)
    names = weights_names(rows)
    out = []
    for r in rows:
        name = names.get(r.weights) if r.experiment == CHECKPOINT_EXPERIMENT else None
        out.append(r if name is None else replace(r, experiment=name[0], model=name[1], profile=name[2]))
    return out


def group_key(row: Row) -> tuple:
    """The evaluation a row belongs to (values of :data:`GROUP`)."""
    return tuple(getattr(row, c) for c in GROUP)


def point_set_text(n: int, points: str) -> str:
    """The point set in words: ``"n 1000, points 3fa9c0d1"`` (``""`` when neither is known)."""
    digest = points.split(":", 1)[-1][:8] if points else ""
    return ", ".join(x for x in (f"n {n}" if n or points else "", f"points {digest}" if digest else "") if x)


def is_suite(attack: str) -> bool:
    """Whether an attack label names the standard suite (AutoAttack's "standard")."""
    return attack.lower().startswith(SUITE_PREFIXES)


def suite_row(row: Row) -> bool:
    """A stage of the standard suite (``advgeom evaluate --suite``: kind ``cascade``,
    cumulative over the earlier stages) or an attack labelled ``standard…``/``suite…``."""
    return row.attack != WORST and (row.extra.get("kind") == "cascade" or is_suite(row.attack))


def failed_checks(row: Row) -> tuple[str, ...]:
    """The failed checks that concern this number (``extra["failed_checks"]``, set by the
    evaluation)."""
    return tuple(row.extra.get("failed_checks", ()))


# ---------------------------------------------------------------------------
# checks' verdict


@dataclass(frozen=True)
class Verdict:
    """The sanity checks of one evaluation: ``status`` is pass, warn, fail or none."""

    status: str
    failed: tuple[str, ...] = ()
    warned: tuple[str, ...] = ()
    count: int = 0
    messages: tuple[str, ...] = ()
    checks: tuple[tuple[str, str, str], ...] = ()   # (name, pass|warn|fail, message) of every check

    @property
    def text(self) -> str:
        if self.status == "fail":
            return "✗ failed: " + ", ".join(self.failed)
        checks = f"{self.count} check{'s' if self.count != 1 else ''}"
        if self.status == "warn":
            return f"warn: {', '.join(self.warned)} ({checks})"
        if self.status == "pass":
            return f"pass ({checks})"
        return "no checks"


def _status(value: float) -> str:
    return "fail" if value < 0.25 else "warn" if value < 0.75 else "pass"


def verdict(rows: Iterable[Row]) -> Verdict:
    """The verdict of the ``check:*`` rows (value 1 pass, 0.5 warn, 0 fail). Where several
    evaluations of one model on one point set ran a check (one row each, attack
    ``check[<id>]``), the check takes its worst status and the messages of every
    evaluation where it did not pass; a check's rows from stores written before those
    keys (attack ``check``) count as one more evaluation."""
    by_name: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.metric.startswith(CHECK_PREFIX):
            by_name[r.metric[len(CHECK_PREFIX):]].append(r)
    if not by_name:
        return Verdict("none")
    each = []
    for name in sorted(by_name):
        rs = sorted(by_name[name], key=lambda r: (r.value, r.attack))
        worst = _status(rs[0].value)
        bad = [r for r in rs if r.value < 0.75] if worst != "pass" else rs[:1]
        msgs = list(dict.fromkeys(str(r.extra.get("message", "")) for r in bad))
        each.append((name, worst, "; ".join(m for m in msgs if m)))
    failed = tuple(n for n, st, _ in each if st == "fail")
    warned = tuple(n for n, st, _ in each if st == "warn")
    msgs = tuple(f"{n}: {m}" for n, st, m in each if st != "pass")
    status = "fail" if failed else "warn" if warned else "pass"
    return Verdict(status, failed, warned, len(each), msgs, tuple(each))


# ---------------------------------------------------------------------------
# one table per evaluation


@dataclass
class Pivot:
    """One evaluation on one point set (``key["n"]``, ``key["points"]``): ``lines`` are
    (label, value per eps), worst case last; ``flagged`` holds the (label, eps) cells a
    failed check concerns."""

    key: dict[str, Any]
    eps: list[float]
    lines: list[tuple[str, list[float | None]]]
    clean: float | None
    verdict: Verdict
    flagged: set[tuple[str, float]] = field(default_factory=set)

    def cell(self, label: str, i: int, fmt: Callable[[float | None], str]) -> str:
        """The formatted value of line ``label`` at the ``i``-th eps, ``✗`` when flagged."""
        value = dict(self.lines)[label][i]
        return fmt(value) + (" ✗" if (label, self.eps[i]) in self.flagged else "")

    @property
    def title(self) -> str:
        k = self.key
        where = " ".join(x for x in (k["dataset"], k["norm"]) if x)
        head = " · ".join(str(x) for x in (k["experiment"], k["model"], k["defense"], where) if x)
        run = ", ".join(x for x in (f"{k['profile'] or 'no profile'}, seed {k['seed']}",
                                    f"weights {k['weights'][:8]}" if k.get("weights") else "",
                                    point_set_text(k.get("n", 0), k.get("points", ""))) if x)
        clean = "—" if self.clean is None else f"{self.clean:.2f}%"
        ci = interval_text(self.clean, k.get("n", 0))
        clean += f" (95% interval {ci})" if ci else ""
        return f"{head} ({run})\nclean {clean} · checks: {self.verdict.text}"


def _line_label(row: Row) -> str:
    if row.metric == "robust_accuracy":
        return row.attack
    return row.metric if row.attack == "none" else f"{row.attack} · {row.metric}"


def _order(rows: list[Row]) -> Callable[[str], tuple]:
    """Attacks by name, then the standard suite's stages in their order, then the worst case."""
    stage = {_line_label(r): (1, int(r.extra.get("stage", 0))) for r in rows if suite_row(r)}
    return lambda label: (2 if label.startswith(WORST) else stage.get(label, (0, 0))[0],
                          stage.get(label, (0, 0))[1], label)


def pivot(rows: Iterable[Row]) -> list[Pivot]:
    """One :class:`Pivot` per evaluation and point set (:data:`GROUP`: rows of one model
    on two point sets make two tables, each titled with its n), cells robust accuracy (other
    metrics as their own lines); clean accuracy and checks go to the title, cost
    metrics (forward/backward passes) are left to the long view."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in one_name(rows):
        groups[group_key(r)].append(r)
    out = []
    for key, rs in groups.items():
        cells: dict[str, dict[float, float]] = defaultdict(dict)
        flagged = set()
        for r in rs:
            if r.metric == "clean_accuracy" or r.metric.startswith(CHECK_PREFIX) or r.metric in COST_METRICS:
                continue
            cells[_line_label(r)][float(r.eps)] = float(r.value)
            if failed_checks(r):
                flagged.add((_line_label(r), float(r.eps)))
        eps = sorted({e for c in cells.values() for e in c})
        lines = [(lab, [cells[lab].get(e) for e in eps]) for lab in sorted(cells, key=_order(rs))]
        clean = next((r.value for r in rs if r.metric == "clean_accuracy"), None)
        out.append(Pivot(dict(zip(GROUP, key)), eps, lines, clean, verdict(rs), flagged))
    return out


# ---------------------------------------------------------------------------
# leaderboard


@dataclass
class Cell:
    """A leaderboard number, the attack label(s) it comes from and the failed checks
    that concern it."""

    value: float | None = None
    label: str = ""
    failed: tuple[str, ...] = ()


@dataclass
class Entry:
    """One evaluation on one point set on a leaderboard (``key`` holds its n and points)."""

    key: dict[str, Any]
    clean: float | None
    paper: Cell
    suite: Cell
    worst: Cell
    verdict: Verdict
    commit: str


@dataclass
class Board:
    """The leaderboard of one (dataset, norm, eps), best worst case first."""

    dataset: str
    norm: str
    eps: float
    entries: list[Entry] = field(default_factory=list)


def _min_cell(rows: list[Row], label: str | None = None) -> Cell:
    if not rows:
        return Cell()
    best = min(rows, key=lambda r: r.value)
    return Cell(best.value, best.attack if label is None else label, failed_checks(best))


def suite_cell(rows: list[Row]) -> Cell:
    """The standard suite at one eps: its last (cumulative) stage, labelled by its stages."""
    suite = sorted((r for r in rows if suite_row(r)), key=lambda r: int(r.extra.get("stage", 0)))
    return _min_cell(suite, " → ".join(r.attack for r in suite))


def worst_cell(rows: list[Row]) -> Cell:
    """The per-sample worst case at one eps. When rows of separate evaluations share a
    key and an attack's number is below the stored worst case, that number is shown
    instead, labelled as an upper bound (the per-sample worst case can only be lower)."""
    worst = _min_cell([r for r in rows if r.attack == WORST])
    lowest = _min_cell([r for r in rows if r.attack != WORST])
    if lowest.value is not None and (worst.value is None or lowest.value < worst.value):
        return Cell(lowest.value, f"upper bound: {lowest.label} (separate evaluations)", lowest.failed)
    return Cell(worst.value, "", worst.failed)


def paper_attack(rows: list[Row]) -> Cell:
    """The paper's attack among robust-accuracy rows at one eps: the rows whose
    ``extra`` says ``paper``, else the strongest white-box attack (single step or
    iterative) outside the standard suite and the worst case."""
    cand = [r for r in rows if r.attack != WORST and not suite_row(r)]
    marked = [r for r in cand if r.extra.get("paper")]
    return _min_cell(marked or [r for r in cand if str(r.extra.get("kind", "")) in WHITE_BOX_KINDS])


def _commit(run_ids: Iterable[int | None], runs: Mapping[int, Mapping[str, Any]]) -> str:
    shas = sorted({str(runs[i]["env"].get("git_sha", "unknown")) if i in runs else "unknown"
                   for i in run_ids})
    return ", ".join(shas) if shas else "unknown"


def leaderboard(rows: Iterable[tuple[Row, int | None]], runs: Mapping[int, Mapping[str, Any]]) -> list[Board]:
    """Boards per (dataset, norm, eps > 0) with an entry per evaluation and point set
    (:data:`GROUP`: its clean accuracy, attacks, worst case and checks all come from that
    point set), from ``(row, run_id)`` pairs
    (:meth:`ResultStore.query_with_runs`) and ``{run_id: run}`` (:meth:`ResultStore.runs`)."""
    pairs_in = list(rows)
    groups: dict[tuple, list[tuple[Row, int | None]]] = defaultdict(list)
    for r, run_id in zip(one_name(r for r, _ in pairs_in), (i for _, i in pairs_in)):
        groups[group_key(r)].append((r, run_id))
    boards: dict[tuple, Board] = {}
    for key, pairs in groups.items():
        rs = [r for r, _ in pairs]
        k = dict(zip(GROUP, key))
        clean = next((r.value for r in rs if r.metric == "clean_accuracy"), None)
        check = verdict(rs)
        by_eps: dict[float, list[tuple[Row, int | None]]] = defaultdict(list)
        for r, run_id in pairs:
            if r.metric == "robust_accuracy" and r.eps > 0:
                by_eps[float(r.eps)].append((r, run_id))
        for e, eps_pairs in by_eps.items():
            at = [r for r, _ in eps_pairs]
            entry = Entry({c: k[c] for c in ENTRY}, clean, paper_attack(at), suite_cell(at),
                          worst_cell(at), check, _commit((i for _, i in eps_pairs), runs))
            bkey = (k["dataset"], k["norm"], e)
            boards.setdefault(bkey, Board(*bkey)).entries.append(entry)
    for b in boards.values():
        b.entries.sort(key=lambda x: -1.0 if x.worst.value is None else x.worst.value, reverse=True)
    return [boards[k] for k in sorted(boards)]



def check_matrix(evaluations: Iterable[tuple[dict[str, Any], Verdict]]
                 ) -> tuple[list[str], list[tuple[dict[str, Any], dict[str, tuple[str, str]]]]]:
    """Sanity checks as one compact table: the check names (columns) and, per evaluation
    (``(key, verdict)`` pairs, each key once), ``{check: (status, message)}``;
    evaluations without checks are left out."""
    seen: dict[tuple, tuple[dict[str, Any], dict[str, tuple[str, str]]]] = {}
    for key, v in evaluations:
        if v.checks:
            seen.setdefault(tuple(key.values()), (key, {c: (status, msg) for c, status, msg in v.checks}))
    names = sorted({c for _, cells in seen.values() for c in cells})
    return names, list(seen.values())
