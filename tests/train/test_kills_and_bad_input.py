"""Runs that cannot break: many SIGKILLs at random moments, concurrent runs of one
config, and one-line errors (exit 2) for configs the model or machine cannot run."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from advgeom.train import load_model

CMD = [sys.executable, "-m", "advgeom.cli", "train", "--no-progress", "--root"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
# adversarial training on the toy, a checkpoint every 3 steps: kills land in every phase
ARGS = ["dataset=\"robust_features_2d\"", "model=\"relu_mlp\"", "model_kwargs.input_dim=2",
        "model_kwargs.width=64", "model_kwargs.depth=2", "model_kwargs.num_outputs=2",
        "objective=\"pgd_at\"", "objective_kwargs.eps=0.1",
        "objective_kwargs.attack=\"pgd:steps=3,early_stop=false\"", "batch_size=64",
        "iterations=600", "checkpoint_every=3", "seed=2"]


def _final(root):
    found = list(root.glob("train/*/final.safetensors"))
    return found[0] if found else None


def _same_weights(a, b):
    sa, sb = load_model(a).state_dict(), load_model(b).state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_many_sigkills_at_random_moments_resume_bit_identical(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "killed"
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(CMD + [str(root)] + ARGS, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not list(root.glob("train/*/.lock")):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if _final(root):
            break
    assert kills >= 3, "the run finished before enough kills; make it longer"
    done = subprocess.run(CMD + [str(root)] + ARGS, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref = subprocess.run(CMD + [str(tmp_path / "ref")] + ARGS, env=ENV, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    assert _same_weights(_final(root), _final(tmp_path / "ref"))
    assert not list(root.glob("train/*/*.tmp"))  # killed writers' temporaries are removed
    # a kill while final is written leaves either no final or a complete one: simulate the
    # worst case (a dead writer's temporary beside a readable final) and rerun: a cache
    # hit, and the temporary is gone
    run = _final(root).parent
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = run / f".final.safetensors.{dead.pid}.abcd1234.tmp"
    left.write_bytes(b"partial")
    os.utime(left, (time.time() - 60, time.time() - 60))
    again = subprocess.run(CMD + [str(root)] + ARGS, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and _outcome(again.stdout) == "cached", again.stderr
    assert not left.exists()


def _outcome(stdout: str) -> str:
    """What ``advgeom train`` did, from its output (after the device header and the
    "will train" preview): the last line's word of ``cached`` or ``trained``."""
    lines = stdout.splitlines()
    assert lines and lines[0].startswith("device: cpu"), stdout
    done = [ln.split(":")[0] for ln in lines if ln.split(":")[0] in ("cached", "trained")]
    return done[-1] if done else ""


def test_two_concurrent_runs_of_one_config_both_end_well(tmp_path):
    args = ARGS[:-3] + ["iterations=60", "checkpoint_every=5", "seed=3"]
    procs = [subprocess.Popen(CMD + [str(tmp_path)] + args, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    states = sorted(_outcome(o[0]) for o in outs)
    assert states == ["cached", "trained"]


@pytest.mark.parametrize("extra,match", [
    (["--device", "nope"], "unknown device"),
    (["--device", "cuda:7"], "CUDA"),
])
def test_bad_devices_are_one_line(tmp_path, extra, match):
    out = subprocess.run(CMD + [str(tmp_path)] + extra + ARGS, env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and match in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("args,match", [
    (["dataset=\"mnist\"", "model=\"fc2\"", "iterations=1"], "2 classes but data set 'mnist' has 10"),
    (["dataset=\"robust_features_2d\"", "model=\"fc2\"", "iterations=1"], "shape"),
    (["dataset=\"robust_features_2d\"", "model=\"relu_mlp\"", "model_kwargs.input_dim=2",
      "objective=\"l1\"", "objective_kwargs.lam=\"abc\"", "iterations=1"], "lam"),
    (["lr=inf"], "lr"),
    # issue 29: values torch would raise on deep inside training, or that train something else
    (["weight_decay=-1"], "weight_decay must be finite and >= 0"),
    (["weight_decay=nan"], "weight_decay must be finite and >= 0"),
    (["momentum=1.5"], "momentum must be in [0, 1)"),
    (ARGS[:6] + ["objective=\"ce\"", "objective_kwargs.label_smoothing=2.0", "iterations=1"],
     "label_smoothing must be in [0, 1]"),
    (ARGS[:7] + ["objective_kwargs.attack=\"square:steps=0\"", "iterations=1"],
     "square steps must be an integer >= 1"),
])
def test_configs_the_model_cannot_run_are_one_line(tmp_path, args, match):
    out = subprocess.run(CMD + [str(tmp_path)] + args, env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and match in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_root_is_one_line(tmp_path):
    if os.geteuid() == 0:
        root = "/proc/advgeom-cannot-write-here"
    else:
        root = str(tmp_path / "ro")
        os.mkdir(root, 0o500)
    out = subprocess.run(CMD + [root] + ARGS[:-3] + ["iterations=1"], env=ENV, capture_output=True,
                         text=True)
    assert out.returncode == 2 and "cannot write" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_markup_in_user_text_is_printed_verbatim(tmp_path):
    root = tmp_path / "[red]x[/red][/x]"
    out = subprocess.run(CMD + [str(root)] + ARGS[:-3] + ["iterations=2", "checkpoint_every=1"],
                         env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[red]x[/red][/x]" in out.stdout
    bad = subprocess.run(CMD + [str(root), "model=\"[/x]nope\""], env=ENV, capture_output=True, text=True)
    assert bad.returncode == 2 and "[/x]nope" in bad.stderr and "Traceback" not in bad.stderr


def test_missing_data_dir_is_an_error_not_a_fallback(tmp_path):
    cmd = [sys.executable, "-m", "advgeom.cli", "--data-dir", str(tmp_path / "nope"), "train",
           "--no-progress", "--root", str(tmp_path)]
    out = subprocess.run(cmd + ARGS[:-3] + ["iterations=1"], env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and "no such directory" in out.stderr
    assert not (tmp_path / "train").exists()


def test_a_diverging_loss_stops_with_one_line_and_saves_nothing(tmp_path):
    args = ARGS[:-6] + ["objective=\"ce\"", "optimizer=\"sgd\"", "lr=1e38", "momentum=0.0",
                        "iterations=50", "checkpoint_every=1"]
    out = subprocess.run(CMD + [str(tmp_path)] + args, env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and "the loss is" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("train/*/final.safetensors"))


def test_sigterm_is_one_line_and_the_rerun_resumes(tmp_path):
    """``kill`` (SIGTERM) of a plain run: exit 143 with one line saying how to resume, the
    checkpoints kept; the rerun resumes and ends like an uninterrupted run."""
    root = tmp_path / "termed"
    proc = subprocess.Popen(CMD + [str(root)] + ARGS, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not list(root.glob("train/*/last.json")):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["error: stopped by SIGTERM; rerun the same command to resume from the "
                                        "last checkpoint"], err
    done = subprocess.run(CMD + [str(root)] + ARGS, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0 and "will resume training" in done.stdout, done.stdout + done.stderr
    ref = subprocess.run(CMD + [str(tmp_path / "ref")] + ARGS, env=ENV, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    assert _same_weights(_final(root), _final(tmp_path / "ref"))


@pytest.mark.parametrize("path, device, match", [
    ("x.safetensors", "gpu", "unknown device 'gpu'"),
    (None, "cpu", "needs a checkpoint path, got NoneType"),
])
def test_load_model_refuses_a_bad_device_or_path_first(path, device, match):
    from advgeom.errors import AdvgeomError

    with pytest.raises(AdvgeomError, match=match):
        load_model(path, device)


@pytest.mark.parametrize("kw, match", [({"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
                                       ({"lr": "0.1"}, "lr must be a number, got '0.1'"),
                                       ({"seed": True}, "seed must be an integer"),
                                       ({"epochs": None}, "epochs must be an integer"),
                                       ({"monitor": {"every": 1.5}}, "monitor.every: expected an integer")])
def test_train_config_fields_have_their_types(kw, match):
    from advgeom.errors import ConfigError
    from advgeom.train import TrainConfig

    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)
    assert TrainConfig(lr=1).lr == 1   # an integer is a number
