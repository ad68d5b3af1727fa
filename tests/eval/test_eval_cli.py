"""``advgeom evaluate``: exit status 1 on a failed check unless --no-strict, and the
numbers it concerns printed with a mark (the model, data and checkpoint are stubbed; the
evaluation itself is real)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import advgeom.config
import advgeom.data
import advgeom.train
import advgeom.train.checkpoint
from advgeom.cli import app
from advgeom.eval import CheckConfig, evaluate

from eval_fakes import ThresholdModel, fake_attack, spec, threshold_data


class _Cfg:
    model, dataset, objective, dataset_kwargs = "threshold", "fake", "ce", {}


def _stub_cli(monkeypatch, tmp_path, fake_run, attack: str) -> list[str]:
    """`advgeom evaluate --checkpoint` on the threshold model and data, its evaluation
    replaced by ``fake_run``; returns the command line."""
    x, y = threshold_data()
    monkeypatch.setattr(advgeom.train, "load_model", lambda path, device: ThresholdModel().eval())
    monkeypatch.setattr(advgeom.train.checkpoint, "load_checkpoint", lambda path: (None, {"config": {}}))
    monkeypatch.setattr(advgeom.config, "from_dict", lambda cls, d: _Cfg())
    monkeypatch.setattr(advgeom.data, "load", lambda *a, **k: (x, y))
    monkeypatch.setattr(advgeom.eval, "run_evaluation", fake_run)
    return ["evaluate", "--checkpoint", str(tmp_path / "m.safetensors"), "--root", str(tmp_path),
            "--no-progress", "--attacks", attack, "--eps", "0.1"]


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    x, y = threshold_data()

    def fake_run(model, data, attacks, eps, **kw):
        bad = spec("bad", fake_attack(flip={0, 1}, overstep=1.5))  # leaves the eps-ball
        return evaluate(ThresholdModel().eval(), (x, y), [bad], [0.1], progress=False,
                        check_config=CheckConfig(unbounded_subset=0))

    return _stub_cli(monkeypatch, tmp_path, fake_run, "fgsm")


def test_an_experiments_rows_name_its_profile_and_a_checkpoint_takes_none(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from advgeom.registry import names

    names("experiment")   # every experiment module imported now, before load is stubbed below
    x, y = threshold_data()
    seen = {}

    def fake_run(model, data, attacks, eps, **kw):
        seen.update(kw)
        return evaluate(ThresholdModel().eval(), (x, y), [spec("ok", fake_attack(flip={0}))], [0.1],
                        progress=False, check_config=CheckConfig(unbounded_subset=0))

    monkeypatch.setattr(advgeom.train, "fit", lambda cfg, **kw: SimpleNamespace(model=ThresholdModel()))
    monkeypatch.setattr(advgeom.data, "load", lambda *a, **k: (x, y))
    monkeypatch.setattr(advgeom.eval, "run_evaluation", fake_run)
    args = ["evaluate", "--experiment", "demo", "--root", str(tmp_path), "--no-progress", "--attacks", "fgsm",
            "--eps", "0.1", "--no-strict"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert seen["profile"] == "quick" and seen["experiment"] == "demo"
    out = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "m.safetensors"),
                                   "--profile", "quick"])
    assert out.exit_code == 2 and "drop --profile" in out.output and out.output.count("\n") == 1


def test_failed_check_exits_1_and_marks(stubbed):
    out = CliRunner().invoke(app, stubbed)
    assert out.exit_code == 1, out.output
    assert "FAIL threat_model" in out.output and "!" in out.output
    assert "failed check(s) threat_model" in out.output


def test_no_strict_exits_0(stubbed):
    out = CliRunner().invoke(app, stubbed + ["--no-strict"])
    assert out.exit_code == 0, out.output
    assert "FAIL threat_model" in out.output


def test_suite_and_attacks_are_exclusive(stubbed):
    out = CliRunner().invoke(app, stubbed + ["--suite", "standard"])
    assert out.exit_code == 2 and "not both" in out.output


# ---------------------------------------------------------------------------
# the results database: point sets, --replace, a read-only file


@pytest.fixture
def storing(monkeypatch, tmp_path):
    """`advgeom evaluate` whose (real) evaluation writes to the store the CLI opened."""
    x, y = threshold_data()

    def fake_run(model, data, attacks, eps, **kw):
        return evaluate(ThresholdModel().eval(), (x, y), [spec("ok", fake_attack(flip={0}))], [0.1],
                        n=kw["n"], store=kw["store"], experiment=kw["experiment"],
                        model_name=kw["model_name"], defense=kw["defense"], dataset=kw["dataset"],
                        seed=kw["seed"], progress=False, check_config=CheckConfig(unbounded_subset=0))

    return _stub_cli(monkeypatch, tmp_path, fake_run, "fgsm") + ["--no-strict"]


def _stored(tmp_path, n):
    from advgeom.results import ResultStore

    return sorted((r.attack, r.eps, r.metric, r.value) for r in
                  ResultStore(tmp_path / "results.sqlite", readonly=True).query(n=n))


def test_a_rerun_on_fewer_points_adds_rows_and_replace_removes_on_purpose(storing, tmp_path):
    out = CliRunner().invoke(app, storing + ["--n", "8"])
    assert out.exit_code == 0, out.output
    eight = _stored(tmp_path, 8)
    assert ("none", 0.0, "clean_accuracy", 100.0) in eight and ("ok", 0.1, "robust_accuracy", 87.5) in eight
    out = CliRunner().invoke(app, storing + ["--n", "4"])
    assert out.exit_code == 0, out.output
    assert "--replace" not in out.output
    four = _stored(tmp_path, 4)
    assert ("ok", 0.1, "robust_accuracy", 75.0) in four and len(four) == len(eight)
    assert _stored(tmp_path, 8) == eight  # the 8-point rows are still there, unchanged
    out = CliRunner().invoke(app, storing + ["--n", "4", "--replace"])
    assert out.exit_code == 0, out.output
    assert f"--replace: removed {len(eight)} stored row(s) measured on another point set" in out.output
    assert _stored(tmp_path, 8) == [] and _stored(tmp_path, 4) == four


def _read_only(monkeypatch, path):
    """Make SQLite see ``path`` as read-only (chmod does not stop root)."""
    import sqlite3
    from pathlib import Path

    real = sqlite3.connect

    def connect(target, *args, uri=False, **kwargs):
        if not uri and Path(target) == path:
            return real(f"{path.resolve().as_uri()}?mode=ro", *args, uri=True, **kwargs)
        return real(target, *args, uri=uri, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_read_only_database_is_one_line_exit_2(stubbed, tmp_path, monkeypatch):
    import os

    from advgeom.results import ResultStore, Row

    db = tmp_path / "ro.sqlite"
    ResultStore(db).add([Row("e", "m", "d", "pgd", 0.1, 0, "robust_accuracy", 1.0)])
    before = db.read_bytes()
    if os.geteuid() != 0:  # a real read-only file (root writes it anyway)
        db.chmod(0o444)
        out = CliRunner().invoke(app, stubbed + ["--db", str(db)])
        assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
        assert out.output.startswith(f"error: cannot record the run: {db}: cannot write the results database")
        assert db.read_bytes() == before
    _read_only(monkeypatch, db)
    out = CliRunner().invoke(app, stubbed + ["--db", str(db)])
    assert out.exit_code == 2, out.output
    assert out.output == (f"error: cannot record the run: {db}: cannot write the results database (attempt "
                          "to write a readonly database; the file or its directory is read-only)\n")
    assert db.read_bytes() == before


def test_class_count_mismatch_is_one_line(monkeypatch, tmp_path):
    """Issue 29: ``advgeom evaluate --checkpoint`` of a 2-class model on a 10-class data
    set is one line and exit 2 (it ended in "index out of bounds")."""
    from advgeom.data.base import TensorData

    x, y = threshold_data()
    args = _stub_cli(monkeypatch, tmp_path, advgeom.eval.run_evaluation, "fgsm")  # the real evaluation
    monkeypatch.setattr(advgeom.data, "load", lambda *a, **k: TensorData(x, y, 10, "ten"))
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "the model scores 2 classes but the data set 'ten' has 10" in out.output
    assert out.output.strip().count("\n") == 0 and "Traceback" not in out.output
