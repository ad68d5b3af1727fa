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


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    x, y = threshold_data()

    class Cfg:
        model, dataset, objective, dataset_kwargs = "threshold", "fake", "ce", {}

    def fake_run(model, data, attacks, eps, **kw):
        bad = spec("bad", fake_attack(flip={0, 1}, overstep=1.5))  # leaves the eps-ball
        return evaluate(ThresholdModel().eval(), (x, y), [bad], [0.1], progress=False,
                        check_config=CheckConfig(unbounded_subset=0))

    monkeypatch.setattr(advgeom.train, "load_model", lambda path, device: ThresholdModel().eval())
    monkeypatch.setattr(advgeom.train.checkpoint, "load_checkpoint", lambda path: (None, {"config": {}}))
    monkeypatch.setattr(advgeom.config, "from_dict", lambda cls, d: Cfg())
    monkeypatch.setattr(advgeom.data, "load", lambda *a, **k: (x, y))
    monkeypatch.setattr(advgeom.eval, "run_evaluation", fake_run)
    return ["evaluate", "--checkpoint", str(tmp_path / "m.safetensors"), "--root", str(tmp_path),
            "--no-progress", "--attacks", "fgsm", "--eps", "0.1"]


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


def test_class_count_mismatch_is_one_line(monkeypatch, tmp_path):
    """Issue 29: ``advgeom evaluate --checkpoint`` of a 2-class model on a 10-class data
    set is one line and exit 2 (it ended in "index out of bounds")."""
    from advgeom.data.base import TensorData

    x, y = threshold_data()

    class Cfg:
        model, dataset, objective, dataset_kwargs = "threshold", "ten", "ce", {}

    monkeypatch.setattr(advgeom.train, "load_model", lambda path, device: ThresholdModel().eval())
    monkeypatch.setattr(advgeom.train.checkpoint, "load_checkpoint", lambda path: (None, {"config": {}}))
    monkeypatch.setattr(advgeom.config, "from_dict", lambda cls, d: Cfg())
    monkeypatch.setattr(advgeom.data, "load", lambda *a, **k: TensorData(x, y, 10, "ten"))
    out = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "m.safetensors"),
                                   "--root", str(tmp_path), "--no-progress", "--attacks", "fgsm",
                                   "--eps", "0.1"])
    assert out.exit_code == 2, out.output
    assert "the model scores 2 classes but the data set 'ten' has 10" in out.output
    assert out.output.strip().count("\n") == 0 and "Traceback" not in out.output
