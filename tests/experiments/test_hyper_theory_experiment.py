"""hyper-theory: registered with its profiles, every setting sourced, a --smoke run
compares the theorems and records a row per case; a stress case where Theorem 5 fails is
reported with its numbers."""
from __future__ import annotations

from advgeom.experiments import hyper_theory as HT
from advgeom.experiments.runner import reproduce
from advgeom.registry import get, names
from advgeom.results import ResultStore


def test_registered_with_profiles_and_costs() -> None:
    assert "hyper-theory" in names("experiment")
    exp = get("experiment", "hyper-theory")
    assert exp.paper == "hyperspherical-defense.txt" and exp.profiles == ("quick", "paper")
    assert set(exp.expected) == {"quick", "paper"}
    for s in HT.SETTINGS.values():
        assert min(s["dims"]) >= 2 and min(s["stress_dims"]) >= 2


def test_smoke_run_compares_and_records(tmp_path) -> None:
    rep = reproduce("hyper-theory", "paper", root=tmp_path, progress=False, log=lambda m: None, smoke=True)
    labels = [c.label for c in rep.outcome.comparisons]
    assert any(lab.startswith("Cor 4") for lab in labels) and any(lab.startswith("Thm 5") for lab in labels)
    assert any(lab.startswith("Thm 2") for lab in labels) and any(lab.startswith("Thm 3") for lab in labels)
    fractions = [c for c in rep.outcome.comparisons if c.unit == "fraction"]
    assert fractions and all(c.paper == 1.0 and 0 <= c.measured <= 1 for c in fractions)
    text = rep.path.read_text()
    for setting in ("w* law", "perturbation d = delta sqrt(p)", "noise sigma", "stress w*"):
        assert f"| {setting} |" in text
    assert "assumption:" in text and "paper: Assumption 1" in text
    rows = ResultStore(tmp_path / "smoke" / "results.sqlite").query(experiment="hyper-theory")
    # smoke: 2 dimensions x 1 replicate x 2 sizes x 1 noise level x 6 metrics
    assert len(rows) == 2 * 2 * 6
    ratios = [r.value for r in rows if r.metric == "thm5_ratio"]
    assert ratios and all(0 < v < 1 for v in ratios)   # Gaussian w*: Theorem 5 holds


def test_stress_counterexample_reported() -> None:
    s = dict(HT.SETTINGS["quick"], stress_dims=(2,), stress_eta=(1e-6,), stress_d=(0.01,))
    stress = HT._stress(s)
    assert len(stress) == 1 and stress[0]["ratio"] > 1 and stress[0]["t5"] > stress[0]["bound"]
