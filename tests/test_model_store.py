"""The committed model store (``store/``, issue 26): every checkpoint in it is a finished
training of a model its experiment's ``cpu`` profile plans, in the run directory its
config (or, for a fine-tuned model, its starting weights) keys, and loads into a working
model; every units database opens with the results schema."""
from __future__ import annotations

import sqlite3
from functools import cache
from pathlib import Path

import pytest
import torch

from advgeom.config import config_hash, from_dict
from advgeom.registry import names
from advgeom.train import TrainConfig, load_model

STORE = Path(__file__).resolve().parents[1] / "store"
FOLDERS = sorted(p for p in STORE.glob("*-cpu") if p.is_dir())
SIDECARS = sorted(STORE.glob("*-cpu/train/*/final.json"))


@cache
def planned_hashes(name: str) -> frozenset[str]:
    """Config hashes of the trainings ``advgeom reproduce NAME --profile cpu`` makes."""
    from advgeom.experiments.plan import make_plan

    return frozenset(config_hash(t.config) for t in make_plan(name, "cpu").trainings)


def sidecar_problems(path: Path) -> list[str]:
    """What is wrong with one stored checkpoint (empty: nothing)."""
    import json

    side = json.loads(path.read_text())
    cfg = from_dict(TrainConfig, side["config"])
    custom = side.get("custom_model")
    problems = []
    if not (side.get("final") and side.get("step") == side.get("total_steps")):
        problems.append(f"not a finished training (step {side.get('step')} of {side.get('total_steps')})")
    if custom is None and side["hash"] != config_hash(cfg):
        problems.append(f"hash {side['hash']} is not its config's ({config_hash(cfg)})")
    name = cfg.model if custom is None else custom["class"].rsplit(".", 1)[-1]
    if path.parent.name != f"{name}-{side['hash']}":
        problems.append(f"in {path.parent.name}, not the run directory {name}-{side['hash']}")
    experiment = path.parents[2].name.removesuffix("-cpu")
    if config_hash(cfg) not in planned_hashes(experiment):
        problems.append(f"config {config_hash(cfg)} is none of {experiment}'s cpu trainings (stale?)")
    if not path.with_suffix(".safetensors").is_file():
        problems.append("no weights beside the sidecar")
    return problems


def test_store_folders_name_cpu_experiments():
    assert not [p.name for p in FOLDERS if p.name.removesuffix("-cpu") not in names("experiment")]


def test_sidecar_problems_catches_a_stale_or_misplaced_checkpoint(tmp_path):
    """The checker fails on an unfinished run, a wrong directory and a config no plan has."""
    import json

    from advgeom.config import to_dict
    from advgeom.experiments.hyper_mnist import hyper_config

    cfg = hyper_config("baseline", "natural", "cpu")
    good = tmp_path / "hyper-mnist-cpu" / "train" / f"{cfg.model}-{config_hash(cfg)}"
    good.mkdir(parents=True)
    side = {"config": to_dict(cfg), "hash": config_hash(cfg), "step": 10, "total_steps": 10, "final": True}
    (good / "final.json").write_text(json.dumps(side))
    (good / "final.safetensors").write_bytes(b"")
    assert sidecar_problems(good / "final.json") == []
    (good / "final.json").write_text(json.dumps(dict(side, step=9, final=False)))
    assert any("not a finished" in p for p in sidecar_problems(good / "final.json"))
    other = TrainConfig(**{**to_dict(cfg), "lr": 5e-4})   # a config the cpu profile does not train
    wrong = tmp_path / "hyper-mnist-cpu" / "train" / "elsewhere"
    wrong.mkdir()
    (wrong / "final.json").write_text(json.dumps(dict(side, config=to_dict(other), hash=config_hash(other))))
    problems = sidecar_problems(wrong / "final.json")
    assert any("not the run directory" in p for p in problems)
    assert any("stale" in p for p in problems)
    assert any("no weights" in p for p in problems)


@pytest.mark.parametrize("path", SIDECARS, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_stored_checkpoint_is_a_planned_finished_training(path):
    assert sidecar_problems(path) == []


@pytest.mark.parametrize("path", SIDECARS, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_stored_checkpoint_loads_and_classifies(path):
    model = load_model(path.with_suffix(".safetensors"))
    with torch.no_grad():
        out = model(torch.full((2, 1, 28, 28), 0.5))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_stored_units_database_opens(folder):
    db = folder / "results.sqlite"
    if not db.exists():
        pytest.skip("no units stored yet")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"results", "runs", "units"} <= tables

