"""The committed model store (``store/``, issue 26): every checkpoint in it is a finished
training of a model its experiment's ``cpu`` profile plans, in the run directory its
config (or, for a fine-tuned model, its starting weights) keys, and loads into a working
model; every units database opens with the results schema."""
from __future__ import annotations

import json
import sqlite3
from functools import cache
from pathlib import Path

import pytest
import torch

from advgeom.config import config_hash, from_dict
from advgeom.hashing import state_hash, text_hash
from advgeom.registry import get, names
from advgeom.train import TrainConfig, build_model, load_model

STORE = Path(__file__).resolve().parents[1] / "store"
FOLDERS = sorted(p for p in STORE.glob("*-cpu") if p.is_dir())
SIDECARS = sorted(STORE.glob("*-cpu/train/*/final.json"))


@cache
def planned_hashes(name: str) -> frozenset[str]:
    """Config hashes of the trainings from scratch ``advgeom reproduce NAME --profile cpu``
    makes: the experiment's declared models, else those its plan traces."""
    from advgeom.experiments.plan import make_plan

    declared = get("experiment", name).models
    if declared is not None:
        return frozenset(config_hash(c) for c in declared("cpu").values())
    return frozenset(config_hash(t.config) for t in make_plan(name, "cpu").trainings if not t.fine_tuned)


def spectral_finetune(cfg: TrainConfig) -> TrainConfig | None:
    """The config spectral-mnist's cpu profile gives a fine-tuning with ``cfg``'s objective
    and constants (its eps comes from the eps rule, data-dependent: taken from ``cfg`` and
    checked against the grid), or None when the objective or a constant is not the profile's."""
    from advgeom.experiments.spectral import finetune_config, settings

    s, kw = settings("spectral-mnist", "cpu"), dict(cfg.objective_kwargs)
    eps = cfg.monitor.eps
    allowed = {"pga_at": {"eps": eps, "iters": 10},
               "global_snr": {"lam": kw.get("lam")} if kw.get("lam") in s["global_lams"] else None,
               "data_snr": ({"lam": kw.get("lam"), "eps": eps, "iters": s["power_iters"]}
                            if kw.get("lam") in s["data_lams"] else None)}.get(cfg.objective)
    if allowed != kw or eps not in s["eps_grid"]:
        return None
    return finetune_config(s, cfg.objective, kw, eps)


# experiment -> the config its cpu profile gives a fine-tuning like this one (None: none)
FINE_TUNED = {"spectral-mnist": spectral_finetune}


def load_stored(path: Path) -> torch.nn.Module:
    """A stored model; a fine-tuned one's architecture is rebuilt from its config (the
    profile's registered model, the module it started from)."""
    side = json.loads(path.with_suffix(".json").read_text())
    if "custom_model" not in side:
        return load_model(path)
    return load_model(path, model=build_model(from_dict(TrainConfig, side["config"])))


@cache
def weights_of(path: Path) -> str:
    return state_hash(load_stored(path))


def stored_weights(folder: Path, but: Path) -> set[str]:
    """State hashes of the finished models stored in ``folder`` other than ``but`` (the
    possible starting points of the fine-tuned model ``but``)."""
    return {weights_of(p) for p in folder.glob("train/*/final.safetensors") if p != but}


def sidecar_problems(path: Path) -> list[str]:
    """What is wrong with one stored checkpoint (empty: nothing)."""
    side = json.loads(path.read_text())
    cfg = from_dict(TrainConfig, side["config"])
    custom = side.get("custom_model")
    folder = path.parents[2]
    experiment = folder.name.removesuffix("-cpu")
    problems = []
    if not (side.get("final") and side.get("step") == side.get("total_steps")):
        problems.append(f"not a finished training (step {side.get('step')} of {side.get('total_steps')})")
    if custom is None:
        key = config_hash(cfg)
        if config_hash(cfg) not in planned_hashes(experiment):
            problems.append(f"config {config_hash(cfg)} is none of {experiment}'s cpu trainings (stale?)")
    else:   # fine-tuned from another stored model: keyed by the config and the starting weights
        key = text_hash(config_hash(cfg), custom["class"], custom["architecture"], custom["weights"], length=12)
        rebuild = FINE_TUNED.get(experiment, lambda c: None)(cfg)
        if rebuild is None or config_hash(rebuild) != config_hash(cfg):
            problems.append(f"config {config_hash(cfg)} is none of {experiment}'s cpu fine-tunings (stale?)")
        if custom["weights"] not in stored_weights(folder, path.with_suffix(".safetensors")):
            problems.append("its starting weights are none of the models stored beside it")
    if side["hash"] != key:
        problems.append(f"hash {side['hash']} is not its key ({key})")
    name = cfg.model if custom is None else custom["class"].rsplit(".", 1)[-1]
    if path.parent.name != f"{name}-{side['hash']}":
        problems.append(f"in {path.parent.name}, not the run directory {name}-{side['hash']}")
    if not path.with_suffix(".safetensors").is_file():
        problems.append("no weights beside the sidecar")
    return problems


def test_store_folders_name_cpu_experiments():
    assert not [p.name for p in FOLDERS if p.name.removesuffix("-cpu") not in names("experiment")]


def test_sidecar_problems_catches_a_stale_or_misplaced_checkpoint(tmp_path):
    """The checker fails on an unfinished run, a wrong directory and a config no plan has."""
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


def test_sidecar_problems_checks_a_fine_tuned_model_against_its_parent_and_profile(tmp_path):
    """A spectral fine-tuning is keyed by its config and starting weights; the checker
    accepts the profile's config at a grid eps from a stored parent, and refuses a
    constant off the grid and a parent that is not stored."""
    from advgeom.config import to_dict
    from advgeom.experiments.spectral import finetune_config, natural_config, settings
    from advgeom.train.build import module_fingerprint, run_key
    from advgeom.train.state import make_sidecar, save_state

    s = settings("spectral-mnist", "cpu")
    parent_cfg = natural_config(s)
    parent = build_model(parent_cfg).eval()
    folder = tmp_path / "spectral-mnist-cpu" / "train"
    pdir = folder / f"{parent_cfg.model}-{config_hash(parent_cfg)}"
    pdir.mkdir(parents=True)
    save_state(pdir / "final.safetensors", parent, None, make_sidecar(parent_cfg, 1, 1, [], True))

    def child(cfg: TrainConfig, start: torch.nn.Module) -> Path:
        custom = {"key": run_key(cfg, start), **module_fingerprint(start)}
        out = folder / f"Classifier-{custom['key']}"
        out.mkdir()
        side = {"config": to_dict(cfg), "hash": custom["key"], "step": 5, "total_steps": 5, "final": True,
                "custom_model": custom}
        save_state(out / "final.safetensors", start, None, make_sidecar(cfg, 5, 5, [], True, custom=custom))
        (out / "final.json").write_text(json.dumps({**json.loads((out / "final.json").read_text()), **side}))
        return out / "final.json"

    good = child(finetune_config(s, "data_snr", {"lam": s["data_lams"][0], "eps": 4.0,
                                                 "iters": s["power_iters"]}, 4.0), parent)
    assert sidecar_problems(good) == []
    off_grid = child(finetune_config(s, "data_snr", {"lam": 0.5, "eps": 4.0, "iters": s["power_iters"]}, 4.0),
                     parent)
    assert any("fine-tunings (stale?)" in p for p in sidecar_problems(off_grid))
    other = build_model(parent_cfg).eval()   # the same seed: the parent's weights, until changed
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    orphan = child(finetune_config(s, "pga_at", {"eps": 4.0, "iters": 10}, 4.0), other)
    assert any("starting weights" in p for p in sidecar_problems(orphan))


@pytest.mark.parametrize("path", SIDECARS, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_stored_checkpoint_is_a_planned_finished_training(path):
    assert sidecar_problems(path) == []


@pytest.mark.parametrize("path", SIDECARS, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_stored_checkpoint_loads_and_classifies(path):
    model = load_stored(path.with_suffix(".safetensors"))
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

