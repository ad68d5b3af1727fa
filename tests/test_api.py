"""The public Python API (issue 18): attacks as attributes, package exports, a user's own
nn.Module through evaluate, the standard suite and training (cached, resumable), and the
normalization helper."""
import importlib
import inspect
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import advgeom
import advgeom.attacks as attacks
from advgeom.errors import CheckpointError
from advgeom.models import with_normalization
from advgeom.registry import get, names
from advgeom.train import TrainConfig, fit, load_model, run_dir

TOY = advgeom.data.load("robust_features_2d", "test", n=64)


def _toy_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------- attacks


def test_every_registered_attack_is_an_attribute_and_nothing_else():
    registered = names("attack")
    for name in registered:
        fn = get("attack", name)
        assert getattr(attacks, name) is fn
        assert getattr(attacks, name.replace("-", "_")) is fn
    exported = set(attacks.__all__) - {"AttackInfo", "PassCounter"}
    assert exported == {n.replace("-", "_") for n in registered}


def test_from_import_gives_functions_and_modules_stay_importable():
    from advgeom.attacks import apgd, apgd_ce, cw_l2, pgd, square  # noqa: F401

    assert all(inspect.isfunction(f) for f in (apgd, apgd_ce, cw_l2, pgd, square))
    module = importlib.import_module("advgeom.attacks.pgd")
    assert inspect.ismodule(module) and module.pgd is pgd and callable(module.bim)
    from advgeom.attacks.pgd import bim

    assert bim is get("attack", "bim")


@pytest.mark.parametrize("name", names("attack"))
def test_attack_help_names_every_parameter_default_and_paper(name):
    fn = get("attack", name)
    doc = fn.__doc__
    assert "UNDOCUMENTED" not in doc
    for p in inspect.signature(fn).parameters.values():
        expected = "required" if p.default is p.empty else f"default {p.default!r}"
        assert f"    {p.name} ({expected}): " in doc, p.name
    assert re.search(r"(19|20)\d\d", doc), "the paper (author year) is named"


def test_attack_on_a_plain_sequential():
    model = _toy_net().eval()
    x, y = TOY.images, TOY.labels
    adv = attacks.pgd(model, x, y, eps=0.1, steps=5)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


# ---------------------------------------------------------------------------- package


def test_package_exports_public_names_only():
    assert advgeom.__all__ and not [n for n in advgeom.__all__ if n.startswith("_")]
    for name in advgeom.__all__:
        assert getattr(advgeom, name) is not None
    assert advgeom.evaluate is advgeom.eval.evaluate
    assert advgeom.standard_suite is advgeom.eval.standard_suite
    assert advgeom.load_model is load_model and advgeom.fit is fit and advgeom.train.fit is fit
    assert advgeom.data.load("robust_features_2d", "test", n=4).images.shape == (4, 2)
    assert "eval" not in advgeom.__all__  # a star import must not shadow the builtin
    for module in (attacks, advgeom.models, advgeom.train):
        assert not [n for n in module.__all__ if n.startswith("_")]


def test_import_advgeom_is_light():
    code = "import sys, advgeom; print(sorted(m for m in ('torch', 'advgeom.eval') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _public_functions():
    fns = [advgeom.evaluate, advgeom.standard_suite, advgeom.load_model, advgeom.fit,
           advgeom.data.load, with_normalization, advgeom.train.run_key, advgeom.train.run_dir]
    return fns + [get("attack", n) for n in names("attack")]


@pytest.mark.parametrize("fn", _public_functions(), ids=lambda f: f.__qualname__)
def test_public_functions_have_type_hints(fn):
    sig = inspect.signature(fn)
    assert sig.return_annotation is not sig.empty
    missing = [p.name for p in sig.parameters.values()
               if p.annotation is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert not missing


# ---------------------------------------------------------------------------- your own model


def test_plain_sequential_through_evaluate_and_the_standard_suite():
    model = nn.Sequential(nn.Linear(2, 2)).eval()  # reads the robust feature: class 1 iff x1 > 0.5
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([5.0, -5.0]))
    result = advgeom.evaluate(model, TOY, "pgd:steps=5,fgsm", eps=[0.05, 0.1], progress=False)
    assert result.ok and 0.5 < result.accuracy() <= result.accuracy("none") <= 1
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()  # 10 classes for APGD-T
    mnist = advgeom.data.load("mnist", "test")
    suite = advgeom.standard_suite(net, mnist, eps=0.3, n=6, progress=False)
    assert {r.attack for r in suite.rows} >= {"apgd-ce", "apgd-t", "fab-t", "square", "worst_case"}
    assert suite.accuracy() == pytest.approx(0.0)


def test_normalization_inside_the_helper_equals_normalization_written_by_hand():
    mean, std = (0.5, 0.4), (0.25, 0.5)
    inner = _toy_net(3)

    class ByHand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner((x - torch.tensor(mean)) / torch.tensor(std))

    wrapped, by_hand = with_normalization(inner, mean, std).eval(), ByHand().eval()
    assert torch.equal(wrapped(TOY.images), by_hand(TOY.images))
    accs = [advgeom.evaluate(m, TOY, "pgd:steps=10", eps=[0.05, 0.1], progress=False)
            for m in (wrapped, by_hand)]
    for e in (0.05, 0.1):
        assert accs[0].accuracy(eps=e) == accs[1].accuracy(eps=e)
        assert torch.equal(accs[0].robust[("worst_case", e)], accs[1].robust[("worst_case", e)])
    # attacking the inner model on normalized inputs with the same eps is a different threat model
    assert with_normalization(inner, 0.5, 0.25)(TOY.images).shape == (64, 2)


AT = TrainConfig(dataset="robust_features_2d", objective="pgd_at",
                 objective_kwargs={"eps": 0.1, "attack": "pgd:steps=3"}, lr=3e-2, batch_size=64,
                 iterations=12, checkpoint_every=4)


class Killed(Exception):
    pass


def test_fit_trains_a_users_module_cached_and_resumable(tmp_path):
    net = _toy_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ref = fit(AT, model=net, root=tmp_path / "ref", progress=False)
    assert ref.path.parent == run_dir(AT, tmp_path / "ref", net)
    assert ref.path.parent.name.startswith("Sequential-")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # net untouched
    assert not _same(ref.model, net) and not ref.model.training

    again = fit(AT, model=_toy_net(), root=tmp_path / "ref", progress=False)  # same init: cache
    assert again.cached and _same(again.model, ref.model)
    other = fit(AT, model=_toy_net(seed=1), root=tmp_path / "ref", progress=False)
    assert not other.cached and other.path != ref.path

    def bomb(step):
        if step == 6:
            raise Killed

    with pytest.raises(Killed):
        fit(AT, model=net, root=tmp_path / "killed", on_step=bomb, progress=False)
    resumed = fit(AT, model=net, root=tmp_path / "killed", progress=False)
    assert resumed.resumed_from == 4 and _same(resumed.model, ref.model)

    with pytest.raises(CheckpointError, match="load_model\\(path, model="):
        load_model(ref.path)
    assert _same(load_model(ref.path, model=net), ref.model)
    with pytest.raises(CheckpointError, match="architecture"):
        load_model(ref.path, model=nn.Sequential(nn.Linear(2, 2)))


def test_registered_models_keep_their_run_directory(tmp_path):
    cfg = TrainConfig(dataset="robust_features_2d", model="relu_mlp",
                      model_kwargs={"input_dim": 2, "width": 8, "depth": 1, "num_outputs": 2})
    assert run_dir(cfg, tmp_path).name == f"relu_mlp-{advgeom.train.run_key(cfg)}"
    from advgeom.config import config_hash

    assert advgeom.train.run_key(cfg) == config_hash(cfg)
