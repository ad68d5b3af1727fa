"""D-SphereNet variants of the hyperspherical-defense CNNs (Table 1's five columns):
every convolution and the FC layer are SphereCorr layers with the variant's operator,
the head is the variant's SphereHead, and bad configs end with one clear error."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models.hyper import DSPHERE_VARIANTS
from advgeom.nn.sphere import SphereConv2d, SphereHead, SphereLinear

SMALL = {"widths": [4, 8], "convs_per_stage": 1, "fc_dim": 8}


@pytest.mark.parametrize("prefix", ["dsphere_mnist", "dsphere_cifar"])
@pytest.mark.parametrize("suffix", list(DSPHERE_VARIANTS))
def test_variant_layers(prefix, suffix):
    op, scale, annealed = DSPHERE_VARIANTS[suffix]
    torch.manual_seed(0)
    model = create_model(prefix + suffix, **SMALL)
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, SphereConv2d)]
    assert len(convs) == 2 and all(c.operator == op for c in convs)
    assert isinstance(model.body.fc, SphereLinear) and model.body.fc.operator == op
    assert isinstance(model.head, SphereHead)
    assert (model.head.scale, model.head.annealed, model.head.operator) == (scale, annealed, op)
    x = torch.rand(3, *model.input_shape)
    assert torch.isfinite(model(x)).all()


def test_options_reach_the_layers():
    m = create_model("dsphere_mnist_wm", operator="sigmoid", k=0.5, learn_k=True, alpha=3.0, **SMALL)
    assert isinstance(m.body.conv1_1.k, nn.Parameter) and m.body.conv1_1.k.item() == 0.5
    assert m.head.alpha.item() == 3.0
    q = create_model("dsphere_mnist_wm_quadratic", a=0.5, **SMALL)
    assert q.body.conv2_1.a == 0.5


@pytest.mark.parametrize("kwargs,match", [({"operator": "tanh"}, "operator"), ({"a": -1.0}, "a must"),
                                          ({"k": 0.0}, "k must"), ({"alpha": 0.0}, "alpha"),
                                          ({"learn_k": "yes"}, "learn_k")])
def test_bad_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model("dsphere_mnist_wm", **kwargs)
