"""Networks of adversarial-spheres.txt: the ReLU MLPs (Section 3, Figure 5) and the
quadratic network (Section 4, eq. 1), plus the max-margin reference classifier.

Inputs are raw sphere coordinates (N x d, NOT in [0,1]; see ``advgeom.data.spheres``).
With ``num_outputs=1`` a model returns one binary logit per point, shape (N, 1); its
prediction is ``logit > 0`` (1 = outer sphere) and it is trained with sigmoid
cross-entropy (defense ``bce``). ``num_classes`` is 2 for all of them.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from advgeom.errors import ConfigError
from advgeom.models._layers import positive_int, register_model
from advgeom.models.base import Classifier

# ---------------------------------------------------------------------------
# ReLU MLP (Section 3: 2 x 1000 with batch norm; Figure 5: also 8 x 2000)


@register_model("relu_mlp")
def relu_mlp(*, input_dim: int = 500, width: int = 1000, depth: int = 2,
             batch_norm: bool = True, num_outputs: int = 1) -> Classifier:
    """``depth`` hidden layers Linear -> BatchNorm (optional) -> ReLU, then a linear
    readout without batch norm (adversarial-spheres.txt Section 3). The paper's nets:
    width 1000, depth 2 (Section 3) and width 2000, depth 8 (Figure 5, ~29M parameters)."""
    input_dim, width = positive_int("input_dim", input_dim), positive_int("width", width)
    depth, num_outputs = positive_int("depth", depth), positive_int("num_outputs", num_outputs)
    if not isinstance(batch_norm, bool):
        raise ConfigError(f"batch_norm must be true or false, got {batch_norm!r}")
    layers: list[nn.Module] = []
    fan_in = int(input_dim)
    for _i in range(int(depth)):
        layers.append(nn.Linear(fan_in, int(width)))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(width)))
        layers.append(nn.ReLU())
        fan_in = int(width)
    model = Classifier(nn.Sequential(*layers), nn.Linear(fan_in, int(num_outputs)),
                       num_classes=2 if int(num_outputs) == 1 else int(num_outputs),
                       input_shape=(int(input_dim),), feature_dim=fan_in)
    model.num_outputs = int(num_outputs)
    return model


# ---------------------------------------------------------------------------
# quadratic network (Section 4): logit = w * sum_j (W1 x)_j^2 + b


class Square(nn.Module):
    """The pointwise quadratic non-linearity sigma(t) = t^2."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x


class SumReadout(nn.Module):
    """``w * sum(h) + b`` with learned scalars ``weight`` (w) and ``bias`` (b)."""

    def __init__(self, weight: float = 1.0, bias: float = -1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(weight)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, h: Tensor) -> Tensor:
        return (self.weight * h.sum(dim=-1) + self.bias).unsqueeze(-1)


class QuadraticNet(Classifier):
    """The quadratic network y(x) = w 1^T (W1 x)^2 + b (eq. 1); d*h + 2 parameters.

    ``W1`` (h x d, no bias), ``w`` and ``b`` are exposed as properties for the alpha
    analysis in ``advgeom.analysis.quadratic``.
    """

    def __init__(self, input_dim: int, hidden: int, *, w: float = 1.0, b: float = -1.0) -> None:
        super().__init__(nn.Sequential(nn.Linear(input_dim, hidden, bias=False), Square()),
                         SumReadout(w, b), num_classes=2, input_shape=(input_dim,),
                         feature_dim=hidden)
        self.num_outputs = 1

    @property
    def W1(self) -> Tensor:
        return self.body[0].weight

    @property
    def w(self) -> Tensor:
        return self.head.weight

    @property
    def b(self) -> Tensor:
        return self.head.bias


@register_model("quadratic_net")
def quadratic_net(*, input_dim: int = 500, hidden: int = 1000,
                  init_radius: float = 1.15) -> QuadraticNet:
    """The quadratic network of Section 4 (h = ``hidden``, default 1000).

    W1 has PyTorch's default Linear init (rows ~ U(-1/sqrt(d), 1/sqrt(d)), so
    E sum_j (W1 x)_j^2 = h ||x||^2 / (3d)); w = 1 and b puts the initial decision
    boundary near ||x|| = ``init_radius`` (the max-margin radius for R = 1.3). The paper
    does not state its initialization.
    """
    input_dim, hidden = positive_int("input_dim", input_dim), positive_int("hidden", hidden)
    if isinstance(init_radius, bool) or not isinstance(init_radius, (int, float)) or not init_radius > 0:
        raise ConfigError(f"init_radius must be a positive number, got {init_radius!r}")
    b = -float(hidden) / (3.0 * float(input_dim)) * float(init_radius) ** 2
    return QuadraticNet(int(input_dim), int(hidden), w=1.0, b=b)


# ---------------------------------------------------------------------------
# reference classifier


class MaxMarginSphere(nn.Module):
    """The max-margin classifier of Section 2: logit = scale * (||x|| - (1+R)/2).

    Not registered (it has no parameters to train); used as a reference in the
    analysis and tests: it makes no errors anywhere on either sphere.
    """

    def __init__(self, R: float = 1.3, scale: float = 10.0) -> None:
        super().__init__()
        self.R = float(R)
        self.scale = float(scale)
        self.num_classes = 2
        self.num_outputs = 1
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.scale * (x.norm(dim=-1) - (1.0 + self.R) / 2.0)).unsqueeze(-1)
