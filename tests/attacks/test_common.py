"""Shared plumbing: binary logit lifting, eps handling, best-iterate tracking,
the pass counter and the attack metadata."""
from __future__ import annotations

import math

import pytest
import torch

from advgeom.attacks._common import BestTracker, as_eps, as_logits
from advgeom.attacks.base import AttackInfo, PassCounter, info
from advgeom.errors import AdvgeomError
from advgeom.registry import names


def test_as_logits_lifts_one_logit():
    s = torch.tensor([[-1.0], [2.0]])
    z = as_logits(s, 2)
    assert torch.equal(z, torch.tensor([[0.0, -1.0], [0.0, 2.0]]))
    assert torch.equal(z.argmax(1), torch.tensor([0, 1]))            # class = logit > 0
    assert as_logits(torch.tensor([0.5, -0.5]), 2).shape == (2, 2)
    with pytest.raises(AdvgeomError):
        as_logits(torch.zeros(3, 4), 2)
    with pytest.raises(AdvgeomError):
        as_logits((torch.zeros(2, 4),), 2)


def test_as_eps():
    x = torch.zeros(3, 2)
    assert torch.equal(as_eps(0.5, x), torch.full((3,), 0.5))
    assert torch.equal(as_eps(torch.tensor([1.0, 2.0, 3.0]), x), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.isinf(as_eps(math.inf, x, allow_inf=True)).all()
    # a float64 input gets eps exact in float64, not rounded through float32 first
    e64 = as_eps(0.1, x.double())
    assert e64.dtype == torch.float64 and e64.tolist() == [0.1] * 3
    for bad in (-1.0, math.nan, math.inf, torch.ones(2), "x"):
        with pytest.raises(AdvgeomError):
            as_eps(bad, x)


def test_best_tracker_prefers_success_then_loss():
    x0 = torch.zeros(3, 1)
    t = BestTracker(x0)
    t.update(torch.full((3, 1), 1.0), torch.tensor([1.0, 5.0, 0.0]), torch.tensor([False, True, False]))
    t.update(torch.full((3, 1), 2.0), torch.tensor([2.0, 1.0, -1.0]), torch.tensor([False, False, False]))
    t.update(torch.full((3, 1), 3.0), torch.tensor([0.0, 9.0, -2.0]), torch.tensor([True, True, False]))
    # sample 0: success at step 3 beats higher loss; sample 1: successful with higher loss;
    # sample 2: never successful -> highest loss (step 1)
    assert torch.equal(t.x[:, 0], torch.tensor([3.0, 3.0, 1.0]))
    assert torch.equal(t.broken, torch.tensor([True, True, False]))


def test_tracker_merge_keeps_worst_case():
    t = BestTracker(torch.zeros(3, 1))
    t.update(torch.ones(3, 1), torch.tensor([1.0, 1.0, 1.0]), torch.tensor([True, False, False]))
    o = BestTracker(torch.zeros(2, 1))
    o.update(torch.full((2, 1), 7.0), torch.tensor([0.5, 3.0]), torch.tensor([True, False]))
    t.merge(torch.tensor([1, 2]), o)
    assert torch.equal(t.x[:, 0], torch.tensor([1.0, 7.0, 7.0]))
    assert torch.equal(t.broken, torch.tensor([True, True, False]))


def test_counter_and_info():
    c = PassCounter()
    c.add_forward(10)
    c.add_backward(10)
    assert (c.forwards, c.backwards, c.passes, c.forward_calls) == (10, 10, 20, 1)
    c.reset()
    assert c.passes == 0
    assert info("cw_l2").min_norm and info("square").gradient_free and info("fgsm").single_step
    assert info("transfer").needs == ("source_model",)
    for name in names("attack"):
        assert isinstance(info(name), AttackInfo)


def test_model_and_input_dtype_mismatch_is_one_clear_error():
    import torch

    from advgeom.errors import AdvgeomError
    from advgeom.registry import get

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).double().eval()
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(AdvgeomError, match="float64 but the inputs are torch.float32"):
        get("attack", "pgd")(model, x, y, eps=0.1)


@pytest.mark.parametrize("make, match", [
    (lambda lin: (lambda x: lin(x.flatten(1)) * float("nan")), "non-finite logits"),
    (lambda lin: (lambda x: (lin(x.flatten(1)) * 100).long()), "floating-point logits"),
    (lambda lin: (lambda x: lin(x)), "cannot read inputs of shape"),   # (N,1,4,4) into Linear(16)
])
def test_the_probe_refuses_a_model_an_attack_cannot_score(make, match):
    from advgeom.attacks import fgsm, pgd

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 3)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    for attack in (fgsm, pgd):
        with pytest.raises(AdvgeomError, match=match):
            attack(make(lin), x, y, eps=0.1)


def test_normalize_refuses_inputs_with_another_number_of_channels():
    from advgeom.models.base import Normalize

    norm = Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    assert norm(torch.rand(2, 3, 4, 4)).shape == (2, 3, 4, 4)
    with pytest.raises(AdvgeomError, match="Normalize has 3 channels"):
        norm(torch.rand(2, 1, 4, 4))
    assert Normalize([0.5], [0.5])(torch.rand(2, 1, 4, 4)).shape == (2, 1, 4, 4)   # one entry broadcasts
