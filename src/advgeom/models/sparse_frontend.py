"""The sparsifying front end as a model (sparsification-robustness.txt, Sections 2 and 5):
``sparse_frontend`` is ``front end -> base model``, the base network retrained on
sparsified images (the front end runs inside ``forward``, so ordinary training on raw
images *is* training on sparsified images). The front end itself is
:class:`advgeom.nn.wavelet.SparsifyingFrontEnd`.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

from torch import nn

from advgeom.errors import ConfigError
from advgeom.models._layers import register_model
from advgeom.models.base import Classifier, create_model
from advgeom.nn.wavelet import SparsifyingFrontEnd


class SparseFrontendModel(Classifier):
    """``forward(x) = base(front_end(x))`` as a :class:`Classifier` whose ``normalize`` is
    ``Sequential(front_end, base.normalize)`` (the front end sees the raw [0,1] input, then
    the base network's own normalization), with ``body``/``head`` those of the base, so
    that ``features``/``head`` and head-level tools keep working. ``front_end`` and
    ``base`` (the network without front end, sharing the same modules) are what the
    locally linear white-box attack uses (:mod:`advgeom.attacks.locally_linear`).
    A base that is not a Classifier becomes the body, with an identity head."""

    def __init__(self, base: nn.Module, front_end: SparsifyingFrontEnd) -> None:
        if isinstance(base, Classifier):
            norm, body, head, feat = base.normalize, base.body, base.head, base.feature_dim
        else:
            norm, body, head = nn.Identity(), base, nn.Identity()
            feat = int(getattr(base, "num_classes", 0) or 0)
        shape = tuple(getattr(base, "input_shape", ())) or (1, *front_end.transform.size)
        super().__init__(body, head, num_classes=int(getattr(base, "num_classes", 0) or 0),
                         input_shape=shape, feature_dim=feat,
                         normalize=nn.Sequential(front_end, norm))
        self.__dict__["_base_net"] = base  # shares modules with self; not registered twice

    @property
    def front_end(self) -> SparsifyingFrontEnd:
        return self.normalize[0]

    @property
    def base(self) -> nn.Module:
        """The network without the front end (same parameters)."""
        return self.__dict__["_base_net"]

    def with_bpda(self, bpda: bool = True) -> "SparseFrontendModel":
        """The same weights behind a front end whose backward pass is the identity (BPDA)."""
        fe = copy.copy(self.front_end)
        fe.bpda = bool(bpda)
        out = SparseFrontendModel(self.base, fe)
        out.train(self.training)
        return out


def wrap_front_end(base: nn.Module, *, wavelet: str = "bior4.4", level: int = 1,
                   rho: float = 0.03, k: int | None = None, bpda: bool = False,
                   size: Sequence[int] | None = None) -> SparseFrontendModel:
    """Put a sparsifying front end in front of an existing network."""
    if size is None:
        shape = tuple(getattr(base, "input_shape", ()))
        if len(shape) < 2:
            raise ConfigError("sparse front end: give size=(H, W); the base model has no input_shape")
        size = shape[-2:]
    fe = SparsifyingFrontEnd(wavelet, level, rho, (int(size[0]), int(size[1])), k=k, bpda=bpda)
    return SparseFrontendModel(base, fe)


@register_model("sparse_frontend")
def sparse_frontend(*, base: str = "nielsen_cnn4", base_kwargs: dict[str, Any] | None = None,
                    wavelet: str = "bior4.4", level: int = 1, rho: float = 0.03,
                    k: int | None = None, bpda: bool = False) -> SparseFrontendModel:
    """Model ``base`` (built by name) behind a top-K wavelet front end (Table 1/2 defense)."""
    if base == "sparse_frontend":
        raise ConfigError("sparse_frontend: base must be another model")
    net = create_model(base, **(base_kwargs or {}))
    return wrap_front_end(net, wavelet=wavelet, level=level, rho=rho, k=k, bpda=bpda)
