"""The experiment framework on a tiny registered experiment: report, rows, resumable units."""
import pytest

from advgeom.errors import AdvgeomError
from advgeom.experiments.base import Comparison, Context, Outcome, experiment, reference
from advgeom.experiments.runner import reproduce
from advgeom.results import ResultStore
from advgeom.train import TrainConfig

CALLS = {"n": 0}


@experiment("_test_tiny", title="tiny", paper="adversarial-spheres.txt", reference="spheres.setup")
def _tiny(ctx: Context) -> Outcome:
    """A tiny experiment used by the tests."""
    model = ctx.train(TrainConfig(dataset="spheres", dataset_kwargs={"d": 4, "n": 64},
                                  model="relu_mlp", model_kwargs={"input_dim": 4, "width": 8, "depth": 1},
                                  objective="bce", batch_size=16, iterations=5, checkpoint_every=5))

    def unit():
        CALLS["n"] += 1
        return {"d": float(ctx.reference("spheres.setup")["d"])}

    d = ctx.cached("dim", unit)["d"]
    ctx.record([ctx.row(model="relu_mlp", metric="d", value=d)])
    import matplotlib.pyplot as plt

    fig = ctx.figure_path("fig")
    plt.figure(); plt.plot([0, 1]); plt.savefig(fig); plt.close()
    assert not model.training
    return Outcome([Comparison("d", d, 500.0, unit="")], [fig], ["a note"])


def test_reproduce_writes_report_rows_and_skips_units(tmp_path):
    rep = reproduce("_test_tiny", "quick", root=tmp_path, progress=False, log=lambda m: None)
    text = rep.path.read_text()
    assert "| d | 500.00 | 500.00 | +0.00 |" in text and "Profile `quick`" in text and "fig.png" in text
    assert "scaled down" in text and "a note" in text and "torch" in text
    rows = ResultStore(tmp_path / "results.sqlite").query(experiment="_test_tiny")
    assert [(r.metric, r.value, r.profile) for r in rows] == [("d", 500.0, "quick")]
    n = CALLS["n"]
    reproduce("_test_tiny", "quick", root=tmp_path, progress=False, log=lambda m: None)
    assert CALLS["n"] == n  # the cached unit was not recomputed


def test_bad_profile_and_reference():
    with pytest.raises(AdvgeomError, match="unknown profile"):
        reproduce("_test_tiny", "fast")
    with pytest.raises(AdvgeomError, match="no reference table"):
        reference("spheres.nonexistent")
    with pytest.raises(AdvgeomError, match="unknown experiment"):
        reproduce("no-such-experiment")


def test_reference_copy_matches_shared():
    from pathlib import Path

    shared = Path(__file__).resolve().parents[3] / "shared" / "reference-results.toml"
    if not shared.is_file():
        pytest.skip("shared/ not beside the checkout")
    from importlib import resources

    packaged = resources.files("advgeom.experiments").joinpath("reference_results.toml").read_text()
    assert packaged == shared.read_text()
