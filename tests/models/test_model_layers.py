"""Shared building blocks of the architectures (advgeom.models._layers)."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models._layers import conv_out, make_activation, make_normalize
from advgeom.registry import get


def test_keyword_check_names_the_key_and_suggests():
    with pytest.raises(ConfigError, match="unknown argument 'num_class'; did you mean 'num_classes'"):
        create_model("cw_mnist_cnn", num_class=10)
    with pytest.raises(ConfigError, match="keyword arguments only"):
        get("model", "fc2")(10)
    # the wrapper keeps the factory's signature for introspection (CLI, docs)
    assert "hidden" in inspect.signature(get("model", "fc2")).parameters


def test_make_normalize_is_per_channel_on_images():
    norm = make_normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0), (3, 4, 5))
    x = torch.rand(2, 3, 4, 5)
    expected = torch.stack([(x[:, c] - m) / s for c, (m, s) in
                            enumerate(zip((0.1, 0.2, 0.3), (0.5, 0.25, 2.0)))], dim=1)
    torch.testing.assert_close(norm(x), expected)
    single = make_normalize((0.5,), (0.5,), (3, 4, 5))
    torch.testing.assert_close(single(x), (x - 0.5) / 0.5)
    for bad in [dict(mean=(0.1, 0.2)), dict(std=(1.0, -1.0, 1.0)), dict(mean="0.5"),
                dict(std=(float("nan"),))]:
        kw = dict(mean=(0.0,), std=(1.0,)) | bad
        with pytest.raises(ConfigError):
            make_normalize(kw["mean"], kw["std"], (3, 4, 5))


def test_make_activation():
    assert isinstance(make_activation("tanh"), nn.Tanh)
    assert isinstance(make_activation(nn.ELU), nn.ELU)
    a, b = make_activation("prelu"), make_activation("prelu")
    assert a.weight is not b.weight
    with pytest.raises(ConfigError, match="activation must be one of"):
        make_activation("gelu_fast")
    with pytest.raises(ConfigError, match="nn.Module"):
        make_activation(lambda: 3)


def test_conv_out():
    assert conv_out(28, 5) == 24 and conv_out(32, 3, 1) == 32 and conv_out(32, 3, 1, 2) == 16
