"""A kill at any moment of a save never strands a run (issue 29): death before or after
every rename of a small run, then a rerun bit-identical to an uninterrupted one; the
temporaries of dead writers removed, a live writer's kept; the embedded record is the
truth and an edited ``.json`` copy is refused with the way out."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from advgeom.errors import CheckpointError
from advgeom.train import TrainConfig, fit, load_model
from advgeom.train import checkpoint as ck
from advgeom.train.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint

# checkpoints at steps 2, 3 (monitor: best too), 4 and 6, then final: 6 saves, 12 renames
CFG = TrainConfig(dataset="robust_features_2d", model="relu_mlp",
                  model_kwargs={"input_dim": 2, "width": 8, "depth": 1, "num_outputs": 2},
                  objective="ce", lr=3e-2, batch_size=32, iterations=6, checkpoint_every=2,
                  monitor={"every": 3, "size": 32, "eps": 0.1, "attack": "pgd:steps=2",
                           "keep_best": True}, seed=1)
RENAMES = ["last.safetensors", "last.json", "best.safetensors", "best.json", "last.safetensors",
           "last.json", "last.safetensors", "last.json", "last.safetensors", "last.json",
           "final.safetensors", "final.json"]


class Killed(BaseException):
    """A SIGKILL: nothing after it runs (no ``except Exception`` catches it)."""


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _age(path, seconds=60.0):
    t = time.time() - seconds
    os.utime(path, (t, t))


def _temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _renames(monkeypatch, kill_at=0, before=False, dead=0):
    """Patch os.replace: count the renames of checkpoint temporaries and die at the
    ``kill_at``-th, after it or (``before``) with its temporary left behind under the
    name a dead writer ``dead`` would have given it, as a real SIGKILL leaves it."""
    real, seen = os.replace, []

    def replace(src, dst):
        if not ck._TEMPORARY.match(os.path.basename(src)):
            return real(src, dst)
        seen.append(os.path.basename(dst))
        if len(seen) == kill_at and before:
            left = re.sub(r"\.\d+\.([0-9a-f]+)\.tmp$", rf".{dead}.\1.tmp", str(src))
            real(src, left)
            _age(left)
            raise Killed
        real(src, dst)
        if len(seen) == kill_at:
            raise Killed

    monkeypatch.setattr(os, "replace", replace)
    return seen


def _outcome(res):
    weights = {k: v.clone() for k, v in res.model.state_dict().items()}
    history = [{**h, "seconds": 0} for h in res.history]
    return weights, history, res.events, res.selected_step


def _same_outcome(a, b):
    (wa, *ra), (wb, *rb) = a, b
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and ra == rb


def _copies_are_the_records(run):
    for weights in run.glob("*.safetensors"):
        with safe_open(str(weights), "pt") as f:
            embedded = f.metadata()[ck.SIDECAR_KEY]
        assert weights.with_suffix(".json").read_text() == embedded, weights.name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        seen = _renames(mp)
        res = fit(CFG, root=tmp_path_factory.mktemp("ref"), progress=False)
    assert seen == RENAMES  # the sweep below covers every rename of the run
    return _outcome(res)


@pytest.mark.parametrize("before", [False, True], ids=["after", "before"])
@pytest.mark.parametrize("kill_at", range(1, len(RENAMES) + 1))
def test_a_kill_at_any_rename_then_a_rerun_is_bit_identical(tmp_path, monkeypatch, reference, kill_at,
                                                            before):
    dead = _dead_pid()
    with monkeypatch.context() as mp:
        _renames(mp, kill_at, before, dead)
        with pytest.raises(Killed):
            fit(CFG, root=tmp_path, progress=False)
    run = next((tmp_path / "train").iterdir())
    assert len(_temporaries(run)) == (1 if before else 0)
    res = fit(CFG, root=tmp_path, progress=False)
    assert _same_outcome(_outcome(res), reference)
    renamed = kill_at - 1 if before else kill_at
    assert res.cached == (renamed >= RENAMES.index("final.safetensors") + 1)
    assert _temporaries(run) == []
    _copies_are_the_records(run)


def test_the_stranded_pair_of_issue_29_loads_and_its_copy_is_restored(tmp_path, monkeypatch):
    """New weights beside the previous step's copy (a death between the two renames)."""
    p = tmp_path / "last.safetensors"
    save_checkpoint(p, {"w": torch.zeros(2)}, {"config": {"lr": 1.0}, "hash": "h", "step": 1})
    old = p.with_suffix(".json").read_text()
    with monkeypatch.context() as mp:
        _renames(mp, kill_at=1)
        with pytest.raises(Killed):
            save_checkpoint(p, {"w": torch.ones(2)}, {"config": {"lr": 1.0}, "hash": "h", "step": 2})
    assert p.with_suffix(".json").read_text() == old
    tensors, side = load_checkpoint(p)
    assert side["step"] == 2 and torch.equal(tensors["w"], torch.ones(2))
    assert json.loads(p.with_suffix(".json").read_text()) == side
    p.with_suffix(".json").unlink()  # a missing copy is restored as well
    assert load_checkpoint(p)[1] == side and json.loads(p.with_suffix(".json").read_text()) == side


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead_weights": f".last.safetensors.{dead}.deadbeef.tmp",
                 "dead_copy": f".last.json.{dead}.0badf00d.tmp",
                 "mine": f".last.safetensors.{os.getpid()}.12345678.tmp",
                 "live": f".final.safetensors.{live.pid}.87654321.tmp",
                 "fresh": f".best.safetensors.{dead}.cafebabe.tmp",
                 "not_ours": f".results.sqlite.{dead}.deadbeef.tmp",
                 "plain": "notes.tmp"}
        for key, name in names.items():
            (tmp_path / name).write_bytes(b"partial")
            if key != "fresh":
                _age(tmp_path / name)
        removed = remove_stale_temporaries(tmp_path)
        assert sorted(p.name for p in removed) == sorted([names["dead_weights"], names["dead_copy"]])
        assert _temporaries(tmp_path) == sorted(set(names.values()) - {p.name for p in removed})
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize("start", ["load", "save"])
def test_the_next_load_or_save_removes_dead_writers_temporaries(tmp_path, start):
    p = tmp_path / "last.safetensors"
    save_checkpoint(p, {"w": torch.zeros(2)}, {"config": {}})
    left = tmp_path / f".last.safetensors.{_dead_pid()}.deadbeef.tmp"
    mine = tmp_path / f".last.json.{os.getpid()}.12345678.tmp"
    for f in (left, mine):
        f.write_bytes(b"partial")
        _age(f)
    if start == "load":
        load_checkpoint(p)
    else:
        save_checkpoint(p, {"w": torch.ones(2)}, {"config": {}})
    assert _temporaries(tmp_path) == [mine.name]


def _record_pair(tmp_path):
    res = fit(CFG, root=tmp_path / "runs", progress=False)
    p = tmp_path / "x.safetensors"
    p.write_bytes(res.path.read_bytes())
    side = json.loads(res.path.with_suffix(".json").read_text())
    return p, side, res.path.with_suffix(".json").read_text()


def _one_line(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg


@pytest.mark.parametrize("edit,where", [
    (lambda s: s["config"].__setitem__("lr", 0.5), "config.lr differs"),
    (lambda s: s["config"]["model_kwargs"].pop("width"), "config.model_kwargs.width differs"),
    (lambda s: s.__setitem__("hash", "0123456789ab"), "hash differs"),
    (lambda s: s.__setitem__("custom_model", {"class": "Net"}), "custom_model differs"),
])
def test_an_edited_copy_is_one_line_naming_the_way_out(tmp_path, edit, where):
    p, side, text = _record_pair(tmp_path)
    edit(side)
    p.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError) as e:
        load_model(p)
    _one_line(e, f"{p.with_suffix('.json')}: edited sidecar", where, "delete x.json to restore it")
    assert json.loads(p.with_suffix(".json").read_text()) == side  # never overwritten
    p.with_suffix(".json").unlink()
    load_model(p)
    assert p.with_suffix(".json").read_text() == text


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", "\udcff"])
def test_a_copy_that_is_no_record_is_one_line_naming_the_way_out(tmp_path, content):
    p, _, text = _record_pair(tmp_path)
    p.with_suffix(".json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    _one_line(e, "x.json: the sidecar is not a JSON object", "delete x.json to restore it")
    p.with_suffix(".json").unlink()
    assert load_checkpoint(p)[1] == json.loads(text)


def test_a_copy_a_save_could_have_written_is_rewritten_silently(tmp_path, recwarn):
    p, side, text = _record_pair(tmp_path)
    stale = dict(side, step=1, history=side["history"][:1], code="older", advgeom="0.0",
                 selected_step=0, events=[{"step": 1}])
    p.with_suffix(".json").write_text(json.dumps(stale))
    assert load_checkpoint(p)[1] == side
    assert p.with_suffix(".json").read_text() == text
    assert not [w for w in recwarn.list if "sidecar" in str(w.message)]
    reformatted = json.dumps(side)  # the same record written otherwise is left alone
    p.with_suffix(".json").write_text(reformatted)
    assert load_checkpoint(p)[1] == side and p.with_suffix(".json").read_text() == reformatted


def test_a_stale_copy_that_cannot_be_rewritten_warns_and_loads(tmp_path, monkeypatch):
    p = tmp_path / "c.safetensors"
    save_checkpoint(p, {"w": torch.zeros(2)}, {"config": {}, "step": 2})
    stale = json.dumps({"config": {}, "step": 1})
    p.with_suffix(".json").write_text(stale)

    def read_only(path, write):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ck, "_atomic_write", read_only)  # a read-only directory, even for root
    with pytest.warns(UserWarning, match="c.json: stale sidecar copy left as it is .Permission denied"):
        assert load_checkpoint(p)[1]["step"] == 2
    assert p.with_suffix(".json").read_text() == stale


@pytest.mark.parametrize("embedded,what", [("{not json", "is not JSON"), ("[1]", "is not a JSON object")])
def test_embedded_metadata_that_is_no_record_is_a_checkpoint_error(tmp_path, embedded, what):
    p = tmp_path / "c.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={ck.SIDECAR_KEY: embedded})
    p.with_suffix(".json").write_text(json.dumps({"config": {}}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    _one_line(e, f"{p}: corrupted checkpoint (its embedded record {what}")


CHILD = """
import os, signal, sys, torch
from advgeom.train import checkpoint as ck
p, when = sys.argv[1], sys.argv[2]
ck.save_checkpoint(p, {"w": torch.zeros(2)}, {"config": {}, "step": 1})
real = os.replace
def replace(src, dst):
    if when == "after":
        real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
ck.save_checkpoint(p, {"w": torch.ones(2)}, {"config": {}, "step": 2})
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_real_sigkill_at_the_first_rename_of_a_save(tmp_path, when):
    p = tmp_path / "c.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(p), when], env=env,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    left = _temporaries(tmp_path)
    assert len(left) == (1 if when == "before" else 0)
    assert all(re.fullmatch(rf"\.c\.safetensors\.{proc.pid}\.[0-9a-f]{{8}}\.tmp", n) for n in left)
    for name in left:  # the dead child's temporary: kept while fresh, removed once idle
        os.utime(tmp_path / name)
        assert load_checkpoint(p)[1]["step"] == 1 and _temporaries(tmp_path) == left
        _age(tmp_path / name)
    tensors, side = load_checkpoint(p)
    assert side["step"] == (2 if when == "after" else 1) and _temporaries(tmp_path) == []
    assert torch.equal(tensors["w"], torch.full((2,), float(side["step"] - 1)))
    assert json.loads(p.with_suffix(".json").read_text()) == side
