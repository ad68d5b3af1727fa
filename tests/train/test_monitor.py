"""The robust-accuracy monitor: catastrophic overfitting flagged on a constructed run,
keep-best early stopping, history terms, and bit-identical resume with pgd_at."""
import pytest
import torch

from advgeom.data import load
from advgeom.errors import ConfigError
from advgeom.registry import _REGISTRY, create
from advgeom.train import TrainConfig, fit, load_model
from advgeom.train.monitor import best_monitored, overfitting_steps

AT = {"eps": 0.1, "attack": "pgd:steps=5,step_size=0.04,early_stop=false"}
MODEL = {"input_dim": 2, "width": 32, "depth": 2, "num_outputs": 2}


def _cfg(objective="pgd_at", kwargs=AT, **kw):
    base = dict(dataset="robust_features_2d", model="relu_mlp", model_kwargs=MODEL,
                objective=objective, objective_kwargs=kwargs, lr=3e-2, batch_size=64,
                iterations=300, checkpoint_every=50)
    return TrainConfig(**{**base, **kw})


def test_pure_rules():
    h = [{"step": 10, "monitor_robust": 0.5}, {"step": 20, "monitor_robust": 0.9},
         {"step": 30, "loss": 1.0}, {"step": 40, "monitor_robust": 0.75},
         {"step": 50, "monitor_robust": 0.65}]
    assert best_monitored(h) == (0.9, 20)
    assert overfitting_steps(h, 0.2) == [50]
    assert overfitting_steps(h, 0.3) == []
    assert overfitting_steps(h, 0.15) == [40, 50]
    assert best_monitored([]) == (-1.0, 0)


@pytest.fixture
def switching_defense(monkeypatch):
    """PGD-AT for the first 150 steps, then natural training: on the toy problem the
    model returns to the non-robust feature and its robust accuracy collapses."""

    def switch(k: int = 150):
        at, ce = create("defense", "pgd_at", **AT), create("defense", "ce")

        def objective(model, x, y, *, generator=None, context=None):
            return (at if context.step < k else ce)(model, x, y, generator=generator)

        return objective

    monkeypatch.setitem(_REGISTRY["defense"], "switch", switch)


def test_monitor_flags_catastrophic_overfitting_and_keeps_the_best(tmp_path, switching_defense):
    messages = []
    cfg = _cfg("switch", {}, monitor={"every": 25, "size": 200, "eps": 0.1, "keep_best": True})
    res = fit(cfg, root=tmp_path, progress=False, log=messages.append)
    robust = {h["step"]: h["monitor_robust"] for h in res.history if "monitor_robust" in h}
    assert sorted(robust) == list(range(25, 301, 25))
    assert max(v for s, v in robust.items() if s <= 150) > 0.85 and robust[300] < 0.5
    assert len(res.events) == 1 and res.events[0]["event"] == "catastrophic_overfitting"
    assert 150 < res.events[0]["step"] <= 300 and "catastrophic overfitting" in messages[0]
    best, at = best_monitored(res.history)
    assert res.selected_step == at <= 150
    # the final weights are the best step's: evaluating them reproduces its monitor value
    from advgeom.train.monitor import Monitor
    from advgeom.train.batches import Batches

    mon = Monitor(cfg, *Batches(cfg, torch.device("cpu")).held_out())
    assert mon.measure(load_model(res.path), at)["monitor_robust"] == pytest.approx(best)
    cached = fit(cfg, root=tmp_path, progress=False)
    assert cached.cached and cached.events == res.events


def test_monitor_points_are_held_out(tmp_path):
    cfg = _cfg(iterations=2, monitor={"every": 1, "size": 1990})
    from advgeom.train.batches import Batches

    b = Batches(cfg, torch.device("cpu"))
    assert b.n == 10 and b.held_out()[0].shape == (1990, 2)
    with pytest.raises(ConfigError, match="monitor.size"):
        Batches(_cfg(monitor={"every": 1, "size": 2000}), torch.device("cpu"))
    with pytest.raises(ConfigError, match="monitor.eps"):
        fit(_cfg("ce", {}, monitor={"every": 1}), root=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="monitor.attack"):
        fit(_cfg(monitor={"every": 1, "attack": "pgd:nope=1"}), root=tmp_path, progress=False)


def test_history_records_named_terms(tmp_path):
    res = fit(_cfg("trades", {"eps": 0.1, "steps": 2, "step_size": 0.05}, iterations=20,
                   checkpoint_every=10), root=tmp_path, progress=False)
    assert [h["step"] for h in res.history] == [10, 20]
    for h in res.history:
        assert h["loss"] == pytest.approx(h["ce"] + 6.0 * h["kl"], rel=1e-5)


def test_monitor_records_training_and_test_curves(tmp_path):
    """Figures 4 and 7 of weight-penalization-classification-layer.txt: clean and robust
    accuracy on the first training points (trained on) and the first test points, with
    nothing held out; the values are the monitor's measurement of the weights at that step."""
    from advgeom.train.batches import Batches
    from advgeom.train.monitor import Monitor

    cfg = _cfg(iterations=40, checkpoint_every=20,
               monitor={"every": 20, "size": 0, "eps": 0.1, "train_points": 64, "test_points": 48})
    res = fit(cfg, root=tmp_path, progress=False)
    curves = [h for h in res.history if "monitor_test_robust" in h]
    assert [h["step"] for h in curves] == [20, 40]
    assert all("monitor_robust" not in h for h in res.history)          # no held-out set
    b = Batches(cfg, torch.device("cpu"))
    assert b.held == 0 and b.n == len(b.data)                          # every training point trained on
    sets = b.curves()
    assert torch.equal(sets["train"][0], b.images[:64]) and len(sets["test"][1]) == 48
    test = load("robust_features_2d", "test")
    assert torch.equal(sets["test"][0], test.images[:48])
    last = Monitor(cfg, *b.held_out(), sets).measure(load_model(res.path), 40)
    assert last == {k: curves[-1][k] for k in last} and len(last) == 4
    assert 0.0 <= last["monitor_test_robust"] <= last["monitor_test_clean"] <= 1.0
    assert last["monitor_train_clean"] > 0.8                             # the toy problem is learnt


def test_monitor_curve_options_are_checked_and_left_out_of_the_hash():
    import hashlib
    import json

    from advgeom.config import config_hash, to_dict

    with pytest.raises(ConfigError, match="monitor.size"):
        _cfg(monitor={"every": 1, "size": 0})                              # nothing to monitor
    with pytest.raises(ConfigError, match="keep_best"):
        _cfg(monitor={"every": 1, "size": 0, "test_points": 5, "keep_best": True})
    with pytest.raises(ConfigError, match="train_points"):
        _cfg(monitor={"every": 1, "train_points": -1})
    cfg = _cfg(monitor={"every": 25, "size": 200, "eps": 0.1})
    data = to_dict(cfg)       # the hash as it was before the curve options existed
    for k in ("channels_last", "compile", "stiefel"):
        del data[k]
    del data["monitor"]["train_points"], data["monitor"]["test_points"]
    before = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert config_hash(cfg) == before
    assert config_hash(_cfg(monitor={"every": 25, "size": 200, "eps": 0.1, "test_points": 10})) != before
