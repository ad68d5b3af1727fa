"""Execution options of the training loop (issue 25): channels_last and compile give the
plain path's loss and weights within float tolerance, train and resume; a compiled
step that differs from eager is refused; the options leave old config hashes alone."""
import hashlib
import json

import pytest
import torch
from torch import nn

from advgeom.config import config_hash, to_dict
from advgeom.errors import ConfigError
from advgeom.train import TrainConfig, fit
from advgeom.train.execution import compile_mismatch, eager_reference


def conv_net() -> nn.Module:
    """A small CNN over the 2-D toy data (conv, BatchNorm, max-pool, dropout): the layers
    whose memory format, compiled kernels and random numbers the options touch. Dropout
    acts on the flattened features, as in small_cnn: on a 4-D channels-last activation it
    would draw the same numbers in another memory order (another mask, same law)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 64), nn.Unflatten(1, (1, 8, 8)),
                         nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 2))


# SGD: Adam's first step moves every weight by about lr whatever its gradient, so a
# float-level gradient (the conv bias before BatchNorm) would differ by 2 lr
BASE = dict(dataset="robust_features_2d", objective="pgd_at", optimizer="sgd",
            objective_kwargs={"eps": 0.1, "attack": "pgd:steps=3,early_stop=false"},
            lr=1e-2, batch_size=64, iterations=12, checkpoint_every=3, seed=2)


class Killed(Exception):
    pass


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _close(a, b, atol):
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= atol


def _losses(res):
    return [h["loss"] for h in res.history]


def _trained_and_resumed(tmp_path, cfg):
    """(uninterrupted run, run killed at step 7 and resumed)."""
    ref = fit(cfg, model=conv_net(), root=tmp_path / "ref", progress=False)

    def bomb(step):
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, model=conv_net(), root=tmp_path / "k", on_step=bomb, progress=False)
    res = fit(cfg, model=conv_net(), root=tmp_path / "k", progress=False)
    assert res.resumed_from == 6
    return ref, res


OPTIONS = ["channels_last", pytest.param("compile", marks=pytest.mark.slow)]   # compiling: ~20 s


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("objective", ["ce", "pgd_at"])
def test_option_gives_the_plain_step(tmp_path, option, objective):
    """One step on the same batch and seeds: the plain path's loss and weights. (Over
    many PGD-AT steps runs drift apart: sign steps amplify float-level differences, as
    with another thread count.)"""
    kw = dict(BASE, iterations=1, checkpoint_every=1)
    if objective == "ce":
        kw.update(objective="ce", objective_kwargs={})
    plain = fit(TrainConfig(**kw), model=conv_net(), root=tmp_path / "plain", progress=False)
    opt = fit(TrainConfig(**kw, **{option: True}), model=conv_net(), root=tmp_path / "opt", progress=False)
    assert _losses(opt) == pytest.approx(_losses(plain), rel=1e-5, abs=1e-6)
    assert _close(_state(opt.model), _state(plain.model), atol=1e-6)


@pytest.mark.parametrize("option", OPTIONS)
def test_option_trains_and_resumes(tmp_path, option):
    cfg = TrainConfig(**BASE, **{option: True})
    ref, res = _trained_and_resumed(tmp_path, cfg)
    assert _losses(ref)[-1] < _losses(ref)[0]
    assert _close(_state(res.model), _state(ref.model), atol=1e-6)
    assert _losses(res) == pytest.approx(_losses(ref), rel=1e-6, abs=1e-7)
    if option == "channels_last":
        conv = next(m for m in ref.model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_compiled_step_that_differs_from_eager_is_refused(tmp_path, monkeypatch):
    from advgeom.train import loop

    class Miscompiled(nn.Module):   # stands in for a compiler bug: another loss
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 1.5

    monkeypatch.setattr(loop, "step_runner", lambda cfg, model: Miscompiled(model) if cfg.compile else model)
    cfg = TrainConfig(**BASE, compile=True)
    with pytest.raises(ConfigError, match="compile=false"):
        fit(cfg, model=conv_net(), root=tmp_path, progress=False)
    assert not list(tmp_path.glob("train/*/*.safetensors"))   # nothing of it was saved


def test_eager_reference_leaves_no_trace_and_matches_a_repeat():
    model = conv_net().train()
    x, y = torch.rand(16, 2), torch.randint(0, 2, (16,))
    before = _state(model)

    def run(m):
        return nn.functional.cross_entropy(m(x), y)

    torch.manual_seed(5)
    ref = eager_reference(model, run, torch.device("cpu"))
    assert _close(_state(model), before, atol=0.0)            # BatchNorm statistics restored
    assert all(p.grad is None for p in model.parameters())    # no .grad written
    loss = run(model)                                         # the same RNG state: same dropout
    loss.backward()
    assert compile_mismatch(ref, loss, model) == ""
    for p in model.parameters():
        p.grad = p.grad * 1.1
    assert "gradient" in compile_mismatch(ref, loss, model)


@pytest.mark.parametrize("kw", [{"channels_last": 1}, {"compile": "yes"}])
def test_options_must_be_booleans(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        TrainConfig(**kw)


def test_options_off_keep_the_config_hash():
    cfg = TrainConfig(**BASE)
    data = {k: v for k, v in to_dict(cfg).items() if k not in ("channels_last", "compile", "stiefel")}
    data["monitor"] = {k: v for k, v in data["monitor"].items() if k not in ("train_points", "test_points")}
    before = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert config_hash(cfg) == before   # the key of a run cached before the options existed
    assert config_hash(TrainConfig(**BASE, channels_last=True)) != before
    assert config_hash(TrainConfig(**BASE, compile=True)) != before
    assert config_hash(TrainConfig(**BASE, stiefel=True)) != before
