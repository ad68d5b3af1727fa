"""Contract tests run over EVERY registered model name (advgeom.registry.names("model")).

Each model is built with its defaults (except ``wrn``, built as WRN-10-1 here, and the
PreAct ResNets, at base width 8; the default WRN-34-10 and PreAct ResNet-18 are checked
by parameter count in test_resnet.py and test_preact.py; the train/eval and
normalize-first checks use a narrow ``cnn7``) and fed
``torch.rand(2, *input_shape)``. A model's output width is ``num_outputs`` when it
declares one (the single-logit binary spheres models), else ``num_classes``; a
single logit is trained with sigmoid cross-entropy, several with softmax CE.

Construction draws initial weights from torch's global RNG, so the fixtures seed it.
"""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.errors import AdvgeomError
from advgeom.models import Classifier, Normalize, create_model
from advgeom.registry import KINDS, get, names

# Models may be registered outside advgeom.models (e.g. defense wrappers): import
# every registry package first so that the list does not depend on test order.
for _kind in KINDS:
    names(_kind)
MODEL_NAMES = names("model")
# Reduced variants: WRN-34-10 is too big to run here (its size is checked in
# test_resnet.py); the behavioural checks that only need the layer types also use a
# narrow CNN7 to keep the suite fast.
# TRADES' SmallCNN starts with a zero classifier (no gradient reaches the body before
# its first update; test_cw_cnn.py checks that initialization): use the default one.
SMALL = {"wrn": {"depth": 10, "widen_factor": 1}, "small_cnn": {"zero_head": False},
         "preact_resnet": {"base_width": 8}, "preact_resnet18": {"base_width": 8}}
NARROW = SMALL | {"cnn7": {"width": 16}}


def build(name: str, seed: int = 0, narrow: bool = False) -> Classifier:
    torch.manual_seed(seed)
    return create_model(name, **(NARROW if narrow else SMALL).get(name, {}))


def inputs(model: Classifier, n: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *model.input_shape, generator=g)


def out_width(model: Classifier) -> int:
    return int(getattr(model, "num_outputs", model.num_classes))


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return F.cross_entropy(logits, labels)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def named_model(request):
    """(name, model in eval mode) built once per module; tests must not mutate it."""
    model = build(request.param)
    model.eval()
    return request.param, model


def test_registry_lists_the_architectures():
    for expected in ("hyper_mnist_cnn", "hyper_cifar_cnn", "cw_mnist_cnn", "nielsen_cnn4",
                     "fc2", "cnn7", "wrn", "resnet32", "preact_resnet", "preact_resnet18"):
        assert expected in MODEL_NAMES


def test_contract_attributes(named_model):
    name, model = named_model
    assert isinstance(model, Classifier), name
    assert isinstance(model.normalize, nn.Module) and isinstance(model.head, nn.Module)
    assert model.num_classes >= 2 and model.feature_dim >= 1
    assert all(isinstance(s, int) and s >= 1 for s in model.input_shape)


def test_forward_shape_finite_and_features(named_model):
    name, model = named_model
    x = inputs(model)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        via_head = model.head(feats)
    assert logits.shape == (2, out_width(model)), name
    assert torch.isfinite(logits).all(), name
    assert feats.shape == (2, model.feature_dim), name
    assert torch.isfinite(feats).all(), name
    torch.testing.assert_close(via_head, logits, rtol=1e-5, atol=1e-6)
    # logits are not constant across inputs (the model actually reads its input)
    assert not torch.allclose(logits[0], logits[1]), name


def test_eval_mode_is_per_sample_and_deterministic(named_model):
    """Eval mode: no dropout, batch norm from running statistics, so a sample's
    logits do not depend on the rest of the batch and repeated calls agree."""
    name, model = named_model
    x = inputs(model, n=3)
    with torch.no_grad():
        full = model(x)
        again = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.equal(full, again), name
    torch.testing.assert_close(single, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_parameter_gets_a_gradient(name):
    """Eval mode (so a bias in front of batch norm is not cancelled by batch
    statistics): every parameter tensor influences the loss. Then one training-mode
    step: gradients exist and are finite."""
    model = build(name)
    x = inputs(model)
    y = torch.tensor([0, 1])
    for mode in ("eval", "train"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        loss_of(model(x), y).backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}.{pname} got no gradient ({mode})"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} non-finite gradient ({mode})"
            if mode == "eval":
                assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_train_mode_uses_batch_norm_and_dropout_and_eval_does_not_touch_buffers(name):
    model = build(name, narrow=True)
    stochastic = any(isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm))
                     for m in model.modules())
    x = inputs(model, n=4)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        evaluated = model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name}: eval forward changed {k}"
    model.train()
    with torch.no_grad():
        trained = model(x)
    if stochastic:
        assert not torch.allclose(trained, evaluated), f"{name}: train and eval modes agree"
    else:
        torch.testing.assert_close(trained, evaluated)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalize_is_applied_first(name):
    """The very first module to see the input is ``model.normalize``, and it sees
    the raw input; a Normalize layer's statistics change the output."""
    model = build(name, narrow=True).eval()
    order: list[nn.Module] = []
    received: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: order.append(mod))
             for m in model.modules() if m is not model]
    hooks.append(model.normalize.register_forward_pre_hook(
        lambda mod, args: received.append(args[0])))
    x = inputs(model)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert order and order[0] is model.normalize, f"{name}: first module is {order[:1]}"
    assert len(received) == 1 and received[0] is x, name
    if isinstance(model.normalize, Normalize):
        with torch.no_grad():
            base = model(x)
            model.normalize.mean += 0.25
            shifted = model(x)
        assert not torch.allclose(base, shifted), f"{name}: changing the mean did nothing"


def test_unknown_model_name_suggests():
    with pytest.raises(AdvgeomError, match="did you mean 'resnet32'"):
        create_model("resnet23")
    with pytest.raises(AdvgeomError, match="unknown model"):
        create_model("no_such_model_at_all")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_keyword_is_a_clear_error(name):
    with pytest.raises(AdvgeomError, match="not_an_option"):
        create_model(name, not_an_option=3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bad_values_are_clear_errors(name):
    params = inspect.signature(get("model", name)).parameters
    if "num_classes" in params:
        for bad in (0, -1, 2.5, "ten"):
            with pytest.raises(AdvgeomError, match="num_classes"):
                create_model(name, num_classes=bad)
    if "input_shape" in params:
        with pytest.raises(AdvgeomError, match="input_shape"):
            create_model(name, input_shape=(3, 0, 32))
    if "mean" in params:
        with pytest.raises(AdvgeomError, match="mean"):
            create_model(name, mean=(0.1, 0.2, 0.3, 0.4, 0.5))
    if "std" in params:
        with pytest.raises(AdvgeomError, match="std"):
            create_model(name, std=(0.0,))
