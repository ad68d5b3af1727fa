"""The settings table (issue 27): every result-affecting training setting of a config is
listed with its source, bookkeeping left out, switched-off settings left out, and a
setting without a source is named in the report rather than dropped."""
from __future__ import annotations

import pytest

from advgeom.errors import AdvgeomError
from advgeom.experiments.at_mnist import at_configs, at_sources
from advgeom.experiments.settings import (Setting, Source, active_fields, assumption, code, missing_sources,
                                          paper, settings_markdown, training_settings)
from advgeom.registry import get, names
from advgeom.train import TrainConfig

# every (experiment, profile) whose experiment declares the models it trains
WITH_MODELS = [(n, p) for n in names("experiment") if not n.startswith("_") and get("experiment", n).models
               for p in get("experiment", n).profiles]


def test_source_kinds_and_text():
    assert str(paper("Table 1")) == "paper: Table 1"
    assert code("repo/file.py").kind == "code" and assumption("why").kind == "assumption"
    with pytest.raises(AdvgeomError):
        Source("guess", "x")
    with pytest.raises(AdvgeomError):
        assumption("  ")


def test_active_fields_follow_the_config():
    adam = TrainConfig(optimizer="adam", iterations=100, milestones=(50,), checkpoint_every=10)
    f = active_fields(adam)
    assert "momentum" not in f and "epochs" not in f and f["iterations"] == "100"
    assert f["milestones"] == "(50)" and f["gamma"] == "0.1" and f["schedule"] == "step"
    assert not {"checkpoint_every", "seed", "channels_last", "compile", "lr_knots", "onecycle_pct"} & set(f)
    assert "monitor" not in f and "model_kwargs" not in f and f["train_size"] == "all"
    sgd = TrainConfig(optimizer="sgd", epochs=3, schedule="piecewise", lr_knots=(0.0, 1.0), lr_factors=(1.0, 0.0),
                      monitor={"every": 5, "size": 10, "keep_best": True}, model_kwargs={"widths": [4]})
    g = active_fields(sgd)
    assert g["momentum"] == "0.9" and g["epochs"] == "3" and "iterations" not in g
    assert g["lr_knots"] == "(0, 1)" and "milestones" not in g and g["model_kwargs"] == "widths=(4)"
    assert "10 held-out training points" in g["monitor"] and "keeps the best weights" in g["monitor"]
    assert active_fields(TrainConfig(iterations=5))["schedule"] == "constant"


def test_label_source_wins_and_missing_ones_are_named():
    cfgs = {"a": TrainConfig(iterations=5), "b": TrainConfig(iterations=5, lr=0.5)}
    generic = {k: paper("generic") for k in active_fields(cfgs["a"])}
    rows, missing = training_settings(cfgs, {**generic, "b.lr": assumption("special")})
    assert not missing
    assert {(r.scope, str(r.source)) for r in rows if r.name == "lr"} == {("a", "paper: generic"),
                                                                           ("b", "assumption: special")}
    del generic["optimizer"]
    assert missing_sources(cfgs, generic) == ["a.optimizer", "b.optimizer"]
    md = settings_markdown(rows[:2], ["a.optimizer"])
    assert md[0] == "## Settings and their sources" and "a.optimizer" in md[-2]


def test_rows_sharing_a_value_and_source_merge():
    s = paper("x")
    md = settings_markdown([Setting("a", "lr", "0.1", s), Setting("b", "lr", "0.1", s),
                            Setting("c", "lr", "0.2", s), Setting("evaluation", "points", "1|0", s)])
    table = [line for line in md if line.startswith("| lr") or line.startswith("| points")]
    assert table == ["| lr | a, b | 0.1 | paper: x |", "| lr | c | 0.2 | paper: x |",
                     "| points | evaluation | 1/0 | paper: x |"]
    everyone = settings_markdown([Setting("a", "lr", "0.1", s), Setting("b", "lr", "0.1", s),
                                  Setting("c", "lr", "0.2", s)], models=["a", "b"])
    assert "| lr | all | 0.1 | paper: x |" in everyone and "| lr | c | 0.2 | paper: x |" in everyone


@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
def test_at_mnist_declares_every_source(profile):
    assert missing_sources(at_configs(profile), at_sources(profile)) == []


def test_at_mnist_paper_follows_the_trades_code_schedule():
    """train_trades_mnist.py's if/elif applies one drop only: lr 0.01 for epochs 1-54, then 0.001."""
    cfg = at_configs("paper")["trades"]
    assert cfg.milestones == (54,) and cfg.gamma == 0.1 and cfg.schedule_unit == "epoch"


def test_every_experiment_with_models_covers_the_known_ones():
    declared = {n for n, _ in WITH_MODELS}
    assert {"at-mnist", "demo", "hyper-mnist", "hyper-cifar", "hyper-blackbox", "penalty-mnist",
            "penalty-cifar", "penalty-activations", "penalty-cifar100", "penalty-cifar-small",
            "penalty-cifar-activations"} <= declared
    assert all(get("experiment", n).sources is not None for n in declared)


@pytest.mark.parametrize("name,profile", WITH_MODELS, ids=[f"{n}-{p}" for n, p in WITH_MODELS])
def test_every_training_setting_has_a_source(name, profile):
    exp = get("experiment", name)
    assert missing_sources(exp.models(profile), exp.sources(profile)) == []


def test_the_hold_out_of_the_hyperspherical_models_is_named():
    """The 5,000 training images held out for calibrating the rejection threshold appear
    in the table with their reason (issue 27)."""
    exp = get("experiment", "hyper-mnist")
    rows, _ = training_settings(exp.models("paper"), exp.sources("paper"))
    held = {(r.value, r.source.kind) for r in rows if r.name == "train_size"}
    assert held == {("55000", "assumption")}
    assert "last 5,000 MNIST training images are held out" in next(r.source.where for r in rows
                                                                    if r.name == "train_size")
