import json

import pytest
import torch

from advgeom.errors import CheckpointError
from advgeom.train import TrainConfig, fit, load_model
from advgeom.train.checkpoint import (flatten_state, load_checkpoint, load_legacy_pt, save_checkpoint,
                                      unflatten_state)

CFG = TrainConfig(dataset="spheres", dataset_kwargs={"d": 4, "n": 64}, model="relu_mlp",
                  model_kwargs={"input_dim": 4, "width": 8, "depth": 1}, objective="bce",
                  batch_size=16, iterations=5, checkpoint_every=5)


def test_flatten_roundtrip_optimizer_state():
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.rand(4, 3)).sum().backward()
    opt.step()
    tensors, meta = {}, {}
    flatten_state("optim/", opt.state_dict(), tensors, meta)
    back = unflatten_state("optim/", tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])


def test_sidecar_and_reload(tmp_path):
    res = fit(CFG, root=tmp_path, progress=False)
    side = json.loads(res.path.with_suffix(".json").read_text())
    assert side["config"]["model"] == "relu_mlp" and side["final"] and "torch" in side
    model = load_model(res.path)
    x = torch.randn(5, 4)
    assert torch.equal(model(x), res.model(x))


def test_corrupted_and_truncated(tmp_path):
    res = fit(CFG, root=tmp_path, progress=False)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(res.path.read_bytes()[:40])
    bad.with_suffix(".json").write_text(res.path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="corrupted checkpoint"):
        load_checkpoint(bad)
    bad.write_bytes(res.path.read_bytes())
    bad.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json: the sidecar is not a JSON object"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_weights_mismatch(tmp_path):
    res = fit(CFG, root=tmp_path, progress=False)
    side = json.loads(res.path.with_suffix(".json").read_text())
    side["config"]["model_kwargs"]["width"] = 9
    p = tmp_path / "x.safetensors"
    p.write_bytes(res.path.read_bytes())
    p.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"x.json: edited sidecar \(config.model_kwargs.width differs "
                       r"from the record inside x.safetensors\); delete x.json to restore it"):
        load_model(p)


def test_legacy_pt_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_legacy_pt(good)["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_legacy_pt(evil)


def test_save_is_atomic(tmp_path):
    p = tmp_path / "c.safetensors"
    save_checkpoint(p, {"a": torch.zeros(2)}, {"config": {}})
    assert not list(tmp_path.glob("*.tmp"))
