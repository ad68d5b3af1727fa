"""The attack contract of DESIGN.md, checked for EVERY registered attack: output
shape/dtype, threat model (||delta|| <= eps + 1e-6 in each supported norm), [0,1],
finite, parameter .grad untouched, model.training unchanged (warning in training
mode), determinism under a seeded generator, per-sample eps, binary models, and
AdvgeomError on bad input."""
from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from torch import nn

from advgeom.attacks.base import AttackInfo, PassCounter
from advgeom.errors import AdvgeomError
from advgeom.registry import get, names
from advgeom.seeding import make_generator

ATTACKS = names("attack")
FAST = {"steps": 4}
SPECIAL = {"cw_l2": {"steps": 4, "search_steps": 2}, "square": {"steps": 8},
           "deepfool": {"steps": 4}, "multi_target": {"steps": 3, "num_targets": 2},
           "apgd-t": {"steps": 3, "num_targets": 2}, "fab": {"steps": 5, "num_targets": 2}}


def meta(name: str) -> AttackInfo:
    return getattr(get("attack", name), "info", None) or AttackInfo(targeted=False)


def call(name, model, x, y, *, source=None, **kw):
    fn = get("attack", name)
    fast = {} if meta(name).single_step else FAST  # single-step attacks refuse steps != 1
    args = {**fast, **SPECIAL.get(name, {}), **kw}
    if "source_model" in meta(name).needs:
        args.setdefault("source_model", source)
    return fn(model, x, y, **args)


def pnorm(d: torch.Tensor, norm: str) -> torch.Tensor:
    flat = d.flatten(1).double()
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def eps_for(norm: str) -> float:
    return 0.1 if norm == "linf" else 0.5


def grads_of(model: nn.Module):
    return [p.grad for p in model.parameters()]


def test_expected_attacks_registered():
    for name in ("fgsm", "fgm", "bim", "pgd", "mifgsm", "cw_l2", "deepfool", "apgd", "square",
                 "multi_target", "transfer", "apgd-ce", "apgd-dlr", "apgd-t"):
        assert name in ATTACKS


@pytest.mark.parametrize("name", ATTACKS)
def test_threat_model_shape_and_grads(name, tiny):
    model, source, x, y = tiny
    info = meta(name)
    for norm in info.norms:
        eps = eps_for(norm)
        assert all(g is None for g in grads_of(model))
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # eval model: no training warning
            adv = call(name, model, x, y, eps=eps, norm=norm, generator=make_generator(0),
                       source=source)
        assert all(g is None for g in grads_of(model)), "parameter .grad touched"
        assert all(g is None for g in grads_of(source))
        assert not model.training
        assert adv.shape == x.shape and adv.dtype == x.dtype
        assert not adv.requires_grad
        assert torch.isfinite(adv).all()
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert (pnorm(adv - x, norm) <= eps + 1e-6).all(), f"{name} {norm} leaves the ball"


@pytest.mark.parametrize("name", ATTACKS)
def test_deterministic_with_generator(name, tiny):
    model, source, x, y = tiny
    norm = meta(name).norms[0]
    runs = [call(name, model, x, y, eps=eps_for(norm), norm=norm, source=source,
                 generator=make_generator(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ATTACKS)
def test_per_sample_eps(name, tiny):
    model, source, x, y = tiny
    norm = meta(name).norms[0]
    eps = torch.linspace(0.0, 2 * eps_for(norm), x.shape[0])
    adv = call(name, model, x, y, eps=eps, norm=norm, source=source, generator=make_generator(0))
    assert (pnorm(adv - x, norm) <= eps.double() + 1e-6).all()
    assert torch.equal(adv[0], x[0])  # eps = 0 leaves the sample unchanged


@pytest.mark.parametrize("name", ATTACKS)
def test_training_mode_warns_and_is_kept(name, tiny):
    model, source, x, y = tiny
    model.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            call(name, model, x, y, eps=eps_for(meta(name).norms[0]), norm=meta(name).norms[0],
                 source=source)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("name", ATTACKS)
def test_bad_input_raises(name, tiny):
    model, source, x, y = tiny
    norm = meta(name).norms[0]
    eps = eps_for(norm)
    bad_x = x.clone()
    bad_x[0, 0, 0, 0] = float("nan")
    cases = {
        "nan image": dict(inputs=bad_x, labels=y, eps=eps, norm=norm),
        "image out of range": dict(inputs=x + 1.0, labels=y, eps=eps, norm=norm),
        "label out of range": dict(inputs=x, labels=torch.full_like(y, 5), eps=eps, norm=norm),
        "negative eps": dict(inputs=x, labels=y, eps=-0.1, norm=norm),
        "nan eps": dict(inputs=x, labels=y, eps=float("nan"), norm=norm),
        "wrong eps shape": dict(inputs=x, labels=y, eps=torch.full((3,), eps), norm=norm),
        "wrong label shape": dict(inputs=x, labels=y[:-1], eps=eps, norm=norm),
        "unknown norm": dict(inputs=x, labels=y, eps=eps, norm="l7"),
        "unknown loss": dict(inputs=x, labels=y, eps=eps, norm=norm, loss="nonsense"),
        "negative steps": dict(inputs=x, labels=y, eps=eps, norm=norm, steps=-1),
    }
    for what, kw in cases.items():
        xs, ys = kw.pop("inputs"), kw.pop("labels")
        with pytest.raises(AdvgeomError):
            call(name, model, xs, ys, source=source, **kw)
            pytest.fail(f"{name}: no AdvgeomError for {what}")


@pytest.mark.parametrize("name", [n for n in ATTACKS if meta(n).targeted])
def test_targeted_mode(name, tiny):
    model, source, x, y = tiny
    norm = meta(name).norms[0]
    target = (y + 1) % 5
    adv = call(name, model, x, target, eps=eps_for(norm), norm=norm, targeted=True,
               source=source, generator=make_generator(0))
    assert (pnorm(adv - x, norm) <= eps_for(norm) + 1e-6).all()


@pytest.mark.parametrize("name", [n for n in ATTACKS if not meta(n).targeted])
def test_untargeted_only_refuses_targeted(name, tiny):
    model, source, x, y = tiny
    with pytest.raises(AdvgeomError):
        call(name, model, x, y, eps=eps_for(meta(name).norms[0]), norm=meta(name).norms[0],
             targeted=True, source=source)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("outputs", [1, 2])
def test_binary_models(name, outputs, tiny, tiny_binary):
    """One logit (class = logit > 0) and two-class models work with the margin loss;
    DLR refuses them with AdvgeomError."""
    _, source, x, _ = tiny
    model, y = tiny_binary[outputs], tiny_binary["labels"]
    info = meta(name)
    norm = info.norms[0]
    src = tiny_binary[3 - outputs]
    if set(info.losses) == {"dlr"}:
        with pytest.raises(AdvgeomError, match="classes"):
            call(name, model, x, y, eps=eps_for(norm), norm=norm, source=src)
        return
    loss = {} if not info.losses else {"loss": "margin" if "margin" in info.losses else info.losses[0]}
    adv = call(name, model, x, y, eps=eps_for(norm), norm=norm, source=src,
               generator=make_generator(0), **loss)
    assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert (pnorm(adv - x, norm) <= eps_for(norm) + 1e-6).all()
    if "dlr" in info.losses and info.uses_loss:
        with pytest.raises(AdvgeomError, match="classes"):
            call(name, model, x, y, eps=eps_for(norm), norm=norm, loss="dlr", source=src)


@pytest.mark.parametrize("name", [n for n in ATTACKS if "counter" in
                                  inspect.signature(get("attack", n)).parameters])
def test_counter_counts_passes(name, tiny):
    model, source, x, y = tiny
    norm = meta(name).norms[0]
    c = PassCounter()
    call(name, model, x, y, eps=eps_for(norm), norm=norm, source=source, counter=c)
    assert c.forwards >= x.shape[0] and c.forward_calls >= 1
    if meta(name).gradient_free:
        assert c.backwards == 0
    elif not meta(name).transfer:
        with torch.no_grad():  # FAB attacks only the correctly classified samples
            n = int((model(x).argmax(1) == y).sum()) if name == "fab" else x.shape[0]
        assert c.backwards >= n


def test_min_norm_attacks_accept_infinite_eps(tiny):
    model, _, x, y = tiny
    for name in ATTACKS:
        if meta(name).min_norm:
            adv = call(name, model, x, y, eps=math.inf, norm=meta(name).norms[0])
            assert torch.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1
