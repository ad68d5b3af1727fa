"""Training: determinism, caching, resume after a kill (in-process and a real SIGKILL)."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from advgeom.errors import CheckpointError, ConfigError
from advgeom.train import TrainConfig, fit, load_model, run_dir

# relu_mlp with batch norm on a small fixed spheres set: BN buffers and Adam state must survive resume.
CFG = TrainConfig(dataset="spheres", dataset_kwargs={"d": 8, "n": 256, "R": 1.3},
                  model="relu_mlp", model_kwargs={"input_dim": 8, "width": 16, "depth": 2},
                  objective="bce", lr=1e-2, batch_size=32, iterations=40, checkpoint_every=10,
                  milestones=(20, 30), seed=3)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Killed(Exception):
    pass


def test_same_seed_same_weights_and_cache(tmp_path):
    a = fit(CFG, root=tmp_path / "a", progress=False)
    b = fit(CFG, root=tmp_path / "b", progress=False)
    assert _same(_weights(a.model), _weights(b.model))
    c = fit(CFG, root=tmp_path / "a", progress=False)
    assert c.cached and _same(_weights(a.model), _weights(c.model))
    other = fit(TrainConfig(**{**CFG.__dict__, "seed": 4}), root=tmp_path / "a", progress=False)
    assert not _same(_weights(a.model), _weights(other.model))
    assert not a.model.training and len(a.history) == 4


# adversarial training (crafting in eval mode on a BatchNorm model) with the monitor on
AT_CFG = TrainConfig(dataset="robust_features_2d", model="relu_mlp",
                     model_kwargs={"input_dim": 2, "width": 32, "depth": 2, "num_outputs": 2},
                     objective="pgd_at", objective_kwargs={"eps": 0.1, "attack": "pgd:steps=5"},
                     lr=3e-2, batch_size=64, iterations=40, checkpoint_every=10,
                     monitor={"every": 20, "size": 100})


@pytest.mark.parametrize("cfg,kill_at", [(CFG, 7), (CFG, 10), (CFG, 25), (AT_CFG, 13), (AT_CFG, 30)])
def test_resume_after_interrupt_matches_uninterrupted(tmp_path, cfg, kill_at):
    ref = fit(cfg, root=tmp_path / "ref", progress=False)

    def bomb(step):
        if step == kill_at:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, root=tmp_path / "k", on_step=bomb, progress=False)
    res = fit(cfg, root=tmp_path / "k", progress=False)
    assert res.resumed_from == (kill_at // 10) * 10
    assert _same(_weights(ref.model), _weights(res.model))
    assert [{**h, "seconds": 0} for h in res.history] == [{**h, "seconds": 0} for h in ref.history]


def test_history_seconds_sum_over_resumes(tmp_path, monkeypatch):
    """The recorded training time goes on from where a killed run stopped (RUN.md wall times)."""
    import advgeom.train.loop as loop

    clock = {"t": 1000.0}
    monkeypatch.setattr(loop.time, "time", lambda: clock["t"])

    def tick(step):
        clock["t"] += 1.0
        if step == 20 and not tick.resumed:
            raise Killed

    tick.resumed = False
    with pytest.raises(Killed):
        fit(CFG, root=tmp_path, on_step=tick, progress=False)
    clock["t"] += 500.0   # the time between the kill and the rerun is not training
    tick.resumed = True
    res = fit(CFG, root=tmp_path, on_step=tick, progress=False)
    # each step's tick comes after its save; the tick of step 20 (after the last save before
    # the kill) is lost work, the 500 s pause is not counted
    assert [h["seconds"] for h in res.history] == [9.0, 19.0, 28.0, 38.0]


def test_online_data_and_dropout_deterministic(tmp_path):
    cfg = TrainConfig(dataset="spheres", dataset_kwargs={"d": 6, "n": 0},
                      model="relu_mlp", model_kwargs={"input_dim": 6, "width": 8, "depth": 1},
                      objective="bce", batch_size=16, iterations=12, checkpoint_every=5)
    a = fit(cfg, root=tmp_path / "a", progress=False)

    def bomb(step):
        if step == 6:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, root=tmp_path / "b", on_step=bomb, progress=False)
    b = fit(cfg, root=tmp_path / "b", progress=False)
    assert _same(_weights(a.model), _weights(b.model))


SIGKILL_RUNS = {
    "bce": ["dataset=\"spheres\"", "dataset_kwargs.d=8", "dataset_kwargs.n=256",
            "model=\"relu_mlp\"", "model_kwargs.input_dim=8", "model_kwargs.width=64",
            "model_kwargs.depth=2", "objective=\"bce\"", "batch_size=64", "iterations=1000",
            "checkpoint_every=50", "seed=1"],
    # adversarial training (BatchNorm model, crafting in eval mode) with the monitor on
    "pgd_at": ["dataset=\"robust_features_2d\"", "model=\"relu_mlp\"", "model_kwargs.input_dim=2",
               "model_kwargs.width=64", "model_kwargs.depth=2", "model_kwargs.num_outputs=2",
               "objective=\"pgd_at\"", "objective_kwargs.eps=0.1",
               "objective_kwargs.attack=\"pgd:steps=5,early_stop=false\"", "batch_size=64",
               "iterations=600", "checkpoint_every=50", "monitor.every=100", "monitor.size=100",
               "seed=1"],
}


@pytest.mark.parametrize("run", sorted(SIGKILL_RUNS))
def test_real_sigkill_then_rerun(tmp_path, run):
    """Kill a CLI training process with SIGKILL after its first checkpoint, rerun, compare."""
    args = SIGKILL_RUNS[run]
    cmd = [sys.executable, "-m", "advgeom.cli", "train", "--no-progress", "--root"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    killed_root = tmp_path / "killed"
    proc = subprocess.Popen(cmd + [str(killed_root)] + args, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list(killed_root.glob("train/*/last.safetensors"))
        if found:
            last = found[0]
            break
        time.sleep(0.01)
    assert last is not None, proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (last.parent / "final.safetensors").exists(), "finished before the kill; make it longer"
    out = subprocess.run(cmd + [str(killed_root)] + args, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "resumed at step" in out.stdout
    ref = subprocess.run(cmd + [str(tmp_path / "ref")] + args, env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    m1 = load_model(next(killed_root.glob("train/*/final.safetensors")))
    m2 = load_model(next((tmp_path / "ref").glob("train/*/final.safetensors")))
    assert _same(_weights(m1), _weights(m2))


@pytest.mark.parametrize("kw,msg", [({"optimizer": "rmsprop"}, "optimizer"), ({"batch_size": 0}, "batch_size"),
                                    ({"milestones": (5, 2)}, "increasing"), ({"lr": -1.0}, "lr"),
                                    ({"iterations": 0, "epochs": 0}, "iterations")])
def test_bad_config(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(**kw)


def test_foreign_checkpoint_refused(tmp_path):
    fit(CFG, root=tmp_path, progress=False)
    d = run_dir(CFG, tmp_path)
    other = TrainConfig(**{**CFG.__dict__, "lr": 5e-3})
    od = run_dir(other, tmp_path)
    od.mkdir(parents=True)
    (od / "last.safetensors").write_bytes((d / "final.safetensors").read_bytes())
    (od / "last.json").write_text((d / "final.json").read_text())
    with pytest.raises(CheckpointError, match="another config"):
        fit(other, root=tmp_path, progress=False)


def test_a_code_change_retrains_unless_reused(tmp_path, monkeypatch):
    import advgeom.train.state as state

    first = fit(CFG, root=tmp_path, progress=False)
    side = json.loads(first.path.with_suffix(".json").read_text())
    assert side["code"] == state.training_code()
    monkeypatch.setattr(state, "training_code", lambda: "other-code")
    reused = fit(CFG, root=tmp_path, progress=False, reuse=True)
    assert reused.cached
    again = fit(CFG, root=tmp_path, progress=False)   # stale: set aside, trained anew
    assert not again.cached and again.resumed_from == 0
    kept = sorted(p.name for p in first.path.parent.glob("*.code-*"))
    assert f"final.code-{side['code']}.safetensors" in kept   # nothing written is lost
    assert json.loads(again.path.with_suffix(".json").read_text())["code"] == "other-code"
    assert _same(_weights(first.model), _weights(again.model))  # same code path, same weights


# ---------------------------------------------------------------------------
# precision (the GPU path's bf16 autocast also runs on a CPU)


def test_bf16_precision_trains_in_autocast_with_float32_weights(tmp_path):
    from advgeom.train import TrainConfig, fit

    base = dict(dataset="robust_features_2d", model="relu_mlp", objective="ce", batch_size=32,
                iterations=20, checkpoint_every=10, seed=1, lr=1e-2,
                model_kwargs={"input_dim": 2, "width": 32, "depth": 2, "num_outputs": 2,
                              "batch_norm": False})
    full = fit(TrainConfig(**base), root=tmp_path, progress=False)
    half = fit(TrainConfig(**base, precision="bf16"), root=tmp_path, progress=False)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert all(math.isfinite(h["loss"]) for h in half.history)
    # the forward passes really ran in bf16: the weights differ from the float32 run's,
    # but only by rounding-sized amounts
    diffs = [float((a - b).abs().max()) for a, b in zip(full.model.parameters(), half.model.parameters())]
    assert max(diffs) > 0 and max(diffs) < 0.05


def test_precision_must_be_known():
    from advgeom.errors import ConfigError
    from advgeom.train import TrainConfig

    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")
