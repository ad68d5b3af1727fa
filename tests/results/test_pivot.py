"""The pivoted views: one table per evaluation, the leaderboard, the checks' verdict."""
from rich.console import Console

from advgeom.results import ResultStore, Row
from advgeom.results.pivot import ENTRY, leaderboard, paper_attack, pivot, verdict, worst_cell
from advgeom.results.render import pivot_tables


def _by_model(pivots):
    return {p.key["model"]: p for p in pivots}


def test_pivot_rows_attacks_worst_case_last_columns_eps(results_db):
    pivots = _by_model(pivot(ResultStore(results_db).query()))
    p = pivots["hyper_mnist_cnn"]
    assert p.eps == [0.1, 0.3]
    assert p.lines == [("fgsm", [71.25, 15.67]), ("pgd", [40.5, 0.0]), ("worst_case", [40.5, 0.0])]
    assert p.clean == 97.67 and p.verdict.status == "pass" and p.verdict.count == 2
    assert "clean 97.67%" in p.title and "checks: pass (2 checks)" in p.title
    front = pivots["nielsen_cnn4"]
    assert [lab for lab, _ in front.lines] == ["fgsm", "pgd", "square", "standard", "worst_case"]
    assert front.flagged == {("pgd", 0.3), ("square", 0.3), ("worst_case", 0.3)}
    assert front.cell("square", 0, str) == "17.33 ✗" and front.cell("fgsm", 0, str) == "80.0"
    # the suite's stages in cascade order (not by name), the worst case last
    assert [lab for lab, _ in pivots["madry_mnist_cnn"].lines] == ["apgd-ce", "apgd-t", "fab-t", "square",
                                                                  "worst_case"]
    assert front.verdict.status == "fail" and front.verdict.failed == ("gradient_masking",)
    assert "✗ failed: gradient_masking" in front.title
    # metrics other than robust accuracy keep their own line; cost metrics are left to --long
    assert pivots["relu_mlp"].lines == [("random_errors", [5.0])] and pivots["relu_mlp"].clean is None
    assert all("forward_passes" not in lab for q in pivots.values() for lab, _ in q.lines)


def test_pivot_fits_100_columns_and_splits_many_eps():
    rows = [Row("e", "a_model_with_a_long_name", "d", f"attack_{i}", eps / 255, 0, "robust_accuracy",
                100.0 - eps, dataset="cifar10", norm="linf") for i in range(3) for eps in range(1, 21)]
    parts = pivot_tables(pivot(rows), width=100)
    console = Console(width=100, record=True)
    for part in parts:
        console.print(part)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text and "attack_2" in text
    assert len(parts) > 2  # a heading and the eps columns spread over several tables
    assert "20/255" in text and "0.07843" not in text and "80.00" in text  # eps 20/255, its value


def test_verdict_levels():
    r = lambda name, v: Row("e", "m", "d", "check", 0.0, 0, f"check:{name}", v)  # noqa: E731
    assert verdict([]).status == "none" and verdict([]).text == "no checks"
    assert verdict([r("a", 1.0), r("b", 0.5)]).text == "warn: b (2 checks)"
    assert verdict([r("a", 0.0), r("b", 0.5)]).text == "✗ failed: a"


def test_verdict_merges_one_check_over_evaluations():
    """Two evaluations on one point set (attacks ``check[<id>]``) and a row from a store
    written before those keys (attack ``check``): each check is counted once, at its
    worst status, with the messages of the evaluations where it did not pass."""
    def r(attack, name, value, msg):
        return Row("e", "m", "none", attack, 0.0, 0, f"check:{name}", value, extra={"message": msg})
    v = verdict([r("check[a]", "monotone", 1.0, "ok a"), r("check[b]", "monotone", 0.0, "rises b"),
                 r("check[a]", "threat_model", 0.5, "near a"), r("check", "threat_model", 0.5, "near old"),
                 r("check[b]", "threat_model", 1.0, "ok b")])
    assert (v.status, v.count, v.failed, v.warned) == ("fail", 2, ("monotone",), ("threat_model",))
    assert dict((n, (st, m)) for n, st, m in v.checks) == {
        "monotone": ("fail", "rises b"), "threat_model": ("warn", "near old; near a")}
    assert v.messages == ("monotone: rises b", "threat_model: near old; near a")
    assert verdict([r("check[a]", "x", 1.0, "ok a"), r("check[b]", "x", 1.0, "ok b")]).text == "pass (1 check)"


def test_leaderboard_columns(results_db):
    store = ResultStore(results_db)
    runs = {r["run_id"]: r for r in store.runs()}
    boards = leaderboard(store.query_with_runs(), runs)
    assert [(b.dataset, b.norm, b.eps) for b in boards] == [("mnist", "linf", 0.1), ("mnist", "linf", 0.3)]
    at, top, second = boards[1].entries  # best worst case first
    assert top.key == {"experiment": "sparsity-table1", "model": "nielsen_cnn4", "defense": "front_end",
                       "profile": "quick", "seed": 0, "weights": "", "n": 300, "points": ""}
    assert (top.clean, top.worst.value, top.suite.value, top.suite.label) == (99.33, 14.67, 16.5, "standard")
    # the paper's attack: strongest white-box attack outside the suite (Square is black-box)
    assert (top.paper.value, top.paper.label) == (43.33, "pgd")
    assert top.verdict.status == "fail" and top.commit == "abc123def456"
    assert top.paper.failed == ("gradient_masking",) and top.worst.failed == ("gradient_masking",)
    assert top.suite.failed == ()
    assert second.suite.value is None and second.worst.value == 0.0
    assert set(top.key) == set(ENTRY)
    # the suite's cascade: its last stage, labelled by its stages in order; no paper attack
    assert (at.suite.value, at.suite.label) == (89.0, "apgd-ce → apgd-t → fab-t → square")
    assert at.paper.value is None and at.worst.value == 89.0 and at.verdict.status == "pass"


def test_worst_case_is_never_above_a_stored_attack():
    row = lambda attack, v: Row("e", "m", "d", attack, 0.3, 0, "robust_accuracy", v)  # noqa: E731
    assert worst_cell([row("pgd", 40.0), row("worst_case", 35.0)]).value == 35.0
    # rows of two evaluations under one key: the lower number is an upper bound on the worst case
    cell = worst_cell([row("pgd", 30.0), row("worst_case", 35.0)])
    assert (cell.value, cell.label) == (30.0, "upper bound: pgd (separate evaluations)")


def test_paper_attack_prefers_marked_rows():
    rows = [Row("e", "m", "d", "pgd", 0.3, 0, "robust_accuracy", 10.0, extra={"kind": "iterative"}),
            Row("e", "m", "d", "fgsm", 0.3, 0, "robust_accuracy", 30.0, extra={"kind": "single_step", "paper": True})]
    assert paper_attack(rows).label == "fgsm"
    assert paper_attack(rows[:1]).label == "pgd"
    assert paper_attack([]).value is None


def test_store_reports_roundtrip_and_old_databases(tmp_path, results_db):
    reps = ResultStore(results_db).reports()
    assert [(r["experiment"], r["profile"], r["seed"]) for r in reps] == [("spheres-relu", "quick", 0)]
    rep = reps[0]
    assert rep["payload"]["comparisons"][0]["measured"] == 0.31
    assert rep["figures"]["accuracy_vs_eps.png"].startswith(b"\x89PNG")
    assert ResultStore(results_db).runs()[rep["run_id"] - 1]["command"].startswith("advgeom reproduce spheres-relu")
    # a database written before the reports table existed opens and gains it
    import sqlite3

    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.executescript("CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, "
                      "command TEXT NOT NULL, env TEXT NOT NULL);")
    con.close()
    assert ResultStore(old).reports() == []


def test_comparison_cells_give_n_the_wilson_interval_and_whether_the_paper_is_inside():
    from types import SimpleNamespace

    from scipy.stats import binomtest

    from advgeom.results.render import COMPARISON_HEADER, comparison_cells

    ci = binomtest(880, 1000).proportion_ci(method="wilson")
    inside = SimpleNamespace(label="pgd_at: worst case", measured=88.0, paper=88.38, unit="%", note="", n=1000)
    cells = dict(zip(COMPARISON_HEADER, comparison_cells(inside)))
    assert cells["n"] == "1000" and cells["95% interval"] == f"[{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
    assert cells["paper inside"] == "yes" and cells["gap"] == "-0.38"
    outside = SimpleNamespace(label="x", measured=80.0, paper=88.0, unit="%", note="", n=1000)
    assert dict(zip(COMPARISON_HEADER, comparison_cells(outside)))["paper inside"] == "no"
    no_n = SimpleNamespace(label="x", measured=80.0, paper=88.0, unit="%", note="")
    assert comparison_cells(no_n)[2:4] == ["—", "—"]


def test_titles_tables_and_the_leaderboard_carry_wilson_intervals(tmp_path):
    from rich.console import Console

    from advgeom.results import ResultStore, Row
    from advgeom.results.pivot import pivot
    from advgeom.results.render import pivot_tables
    from advgeom.results.site import build_site

    base = dict(experiment="e", model="m", defense="d", seed=0, dataset="mnist", norm="linf",
                profile="cpu", n=1000, points="1000:abcdef012345")
    rows = [Row(attack="none", eps=0.0, metric="clean_accuracy", value=98.5, **base),
            Row(attack="pgd", eps=0.3, metric="robust_accuracy", value=90.0, **base),
            Row(attack="worst_case", eps=0.3, metric="robust_accuracy", value=88.0, **base)]
    (p,) = pivot(rows)
    assert "clean 98.50% (95% interval [97.5, 99.1])" in p.title
    console = Console(width=120, record=True)
    for r in pivot_tables([p]):
        console.print(r)
    text = console.export_text()
    assert "95% CI" in text and "85.8–89.9" in text
    # every robust accuracy carries its interval, not only the worst case
    assert text.count("95% CI") == 2 and "88.0–91.7" in text
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(rows)
    html = build_site(store, tmp_path / "site").read_text()
    assert '<span class="ci">[85.8, 89.9]</span>' in html and '<span class="ci">[97.5, 99.1]</span>' in html
