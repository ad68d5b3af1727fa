import pytest

from advgeom.errors import AdvgeomError
from advgeom.registry import KINDS, create, get, names, register


def test_every_kind_lists_and_resolves():
    for kind in KINDS:
        for name in names(kind):
            assert get(kind, name) is not None


def test_unknown_name_suggests():
    with pytest.raises(AdvgeomError, match="did you mean 'hyper_mnist_cnn'"):
        get("model", "hyper_mnist_cn")
    with pytest.raises(AdvgeomError, match="unknown registry kind"):
        names("widgets")


def test_register_twice_rejected_and_create_calls():
    def f(**kw):
        return kw

    register("defense", "_test_double")(f)
    register("defense", "_test_double")(f)  # same object: idempotent
    with pytest.raises(AdvgeomError, match="registered twice"):
        register("defense", "_test_double")(lambda: None)
    assert create("defense", "_test_double", a=1) == {"a": 1}


def test_foundation_names_present():
    models = set(names("model"))
    for m in ["hyper_mnist_cnn", "hyper_cifar_cnn", "cw_mnist_cnn", "nielsen_cnn4", "fc2", "cnn7",
              "relu_mlp", "quadratic_net", "wrn", "resnet32"]:
        assert m in models, m
    assert {"mnist", "fashion-mnist", "cifar10", "spheres"} <= set(names("dataset"))
    assert "ce" in names("defense") and "demo" in names("experiment")
