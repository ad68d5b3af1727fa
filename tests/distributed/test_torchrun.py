"""torchrun with two gloo ranks on CPU (advgeom.distributed's contract): the global
batches and updates of one process, rank 0 alone writing, resume after a rank is
killed, and sharded evaluation rows identical to a single-process evaluation."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advgeom.train import load_model

WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run(cmd, out: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd + [str(WORKER), str(out), *extra], env=ENV, capture_output=True,
                          text=True, timeout=240)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A two-rank run of the worker, then a single-process one that trains the same
    config and evaluates the two-rank run's model (same weights, one process)."""
    base = tmp_path_factory.mktemp("ddp")
    single, ddp = base / "single", base / "ddp"
    _run(TORCHRUN, ddp)
    final = next((ddp / "root-0" / "train").iterdir()) / "final.safetensors"
    _run([sys.executable], single, "0", str(final))
    return single, ddp


def test_two_ranks_train_like_one_process(runs):
    single, ddp = runs
    one, two = _result(single), _result(ddp)
    assert one["world_size"] == 1 and two["world_size"] == 2
    p1, p2 = one["ranks"][0]["params"], two["ranks"][0]["params"]
    assert p1.keys() == p2.keys()
    # the same global batches and the same mean gradient: equal up to float summation
    # order (stated tolerance: 1e-5 absolute after 40 Adam steps)
    for k in p1:
        assert torch.allclose(torch.tensor(p1[k]), torch.tensor(p2[k]), atol=1e-5, rtol=0), k
    # every rank ends with exactly rank 0's weights
    assert two["ranks"][1]["params"] == two["ranks"][0]["params"]


def test_only_rank_zero_writes(runs):
    _, ddp = runs
    assert not (ddp / "root-1").exists()
    files = _files(ddp / "root-0")
    run = next(iter({f.split("/")[1] for f in files}))
    assert files == {f"train/{run}/{n}" for n in
                     (".lock", "last.safetensors", "last.json", "final.safetensors", "final.json")}
    side = json.loads((ddp / "root-0" / "train" / run / "final.json").read_text())
    assert side["world_size"] == 2


def test_sharded_evaluation_rows_identical(runs):
    single, ddp = runs
    one = [tuple(r) for r in _result(single)["ranks"][0]["rows"]]   # the same weights, one process
    two = _result(ddp)["ranks"]
    assert [tuple(r) for r in two[0]["rows"]] == one
    assert [tuple(r) for r in two[1]["rows"]] == one
    assert any(m == "robust_accuracy" and 0 < v < 100 for _, _, m, v in one)  # not a trivial case


def test_resume_after_killing_one_rank(runs, tmp_path):
    _, ddp = runs
    killed = _run(TORCHRUN, tmp_path, "12", ok=False)
    assert killed.returncode != 0
    last = tmp_path / "root-0" / "train"
    step = json.loads(next(last.iterdir()).joinpath("last.json").read_text())["step"]
    assert 0 < step < 40   # rank 0 checkpointed before its peer died, and did not finish
    _run(TORCHRUN, tmp_path)
    again = _result(tmp_path)
    assert again["ranks"][0]["resumed_from"] == step == again["ranks"][1]["resumed_from"]
    # the resumed run ends with the uninterrupted two-rank run's weights, bit for bit
    assert again["ranks"][0]["params"] == _result(ddp)["ranks"][0]["params"]


def test_cli_train_under_torchrun(tmp_path):
    args = ["-m", "advgeom", "train", "--no-progress", "--root", str(tmp_path), "dataset=\"robust_features_2d\"",
            "model=\"relu_mlp\"", "model_kwargs.input_dim=2", "model_kwargs.width=16",
            "model_kwargs.depth=1", "model_kwargs.num_outputs=2", "model_kwargs.batch_norm=false",
            "objective=\"pgd_at\"", "objective_kwargs.eps=0.1", "objective_kwargs.attack=\"pgd:steps=2\"",
            "batch_size=16", "iterations=6", "checkpoint_every=3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + args
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained: relu_mlp") == 1   # rank 0 speaks, rank 1 is quiet
    final = next(tmp_path.glob("train/*/final.safetensors"))
    assert json.loads(final.with_suffix(".json").read_text())["world_size"] == 2
    assert load_model(final).num_classes == 2
    # sharded CLI evaluation: rank 0 prints and stores once, the run records two ranks
    db = tmp_path / "r.sqlite"
    ev = subprocess.run(cmd[:5] + ["-m", "advgeom", "evaluate", "--checkpoint", str(final), "--attacks",
                                   "fgsm,pgd:steps=3", "--eps", "0.1", "--points", "40", "--batch-size", "10",
                                   "--no-progress", "--no-strict", "--root", str(tmp_path), "--db", str(db)],
                        env=ENV, capture_output=True, text=True, timeout=240)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert ev.stdout.count("clean_accuracy") <= 1 and ev.stdout.count("fgsm") >= 1
    from advgeom.results import ResultStore

    store = ResultStore(db)
    assert [r["env"]["world_size"] for r in store.runs()] == ["2"]
    rows = store.query()
    keys = [(r.attack, r.eps, r.metric) for r in rows]
    assert len(keys) == len(set(keys)) and ("fgsm", 0.1, "robust_accuracy") in keys
    assert store.query(metric="clean_accuracy")[0].n == 40


def test_a_dead_rank_leaves_one_line_per_surviving_rank(tmp_path):
    """Issue 29: when one rank dies, each other rank prints one line naming the dead peer
    and the command that resumes the run (no tracebacks); torchrun's own summary aside."""
    args = ["train", "--no-progress", "--root", str(tmp_path / "runs"), "dataset=\"robust_features_2d\"",
            "model=\"relu_mlp\"", "model_kwargs.input_dim=2", "model_kwargs.width=16",
            "model_kwargs.depth=1", "model_kwargs.num_outputs=2", "model_kwargs.batch_norm=false",
            "objective=\"ce\"", "batch_size=16", "iterations=60", "checkpoint_every=2"]
    logs = tmp_path / "logs"
    cmd = TORCHRUN + ["--log-dir", str(logs), "--redirects", "3",
                      str(WORKER.with_name("cli_kill_worker.py"))] + args
    proc = subprocess.run(cmd, env=dict(ENV, ADVGEOM_KILL_AT="3"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    (err0,) = logs.glob("*/attempt_0/0/stderr.log")
    lines = err0.read_text().strip().splitlines()
    assert len(lines) == 1, err0.read_text()
    assert "Traceback" not in lines[0]
    assert "rank 1 (pid " in lines[0] and "of 2 died, so rank 0 stops too" in lines[0]
    assert "torchrun --standalone --nproc_per_node=2 -m advgeom train --no-progress" in lines[0]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to list threads")
def test_leaving_the_group_ends_its_gloo_threads(tmp_path):
    """A group left with destroy_process_group must not keep its gloo threads: torch 2.13
    keeps the group alive when torch._dynamo is first imported while it exists, and the
    threads then outlive the interpreter (a rank ended in SIGABRT after its work, about
    one run in ten, and failed the run)."""
    proc = subprocess.run(TORCHRUN + [str(WORKER.with_name("teardown_worker.py")), str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["gloo_threads"] == [] for r in ranks), ranks
