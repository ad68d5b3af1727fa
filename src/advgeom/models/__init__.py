"""Architectures, registered by name; ``create_model(name, **kw)`` builds one.

Any ``nn.Module`` mapping [0,1] inputs to logits works in advgeom; a model that
expects normalized inputs is wrapped with :func:`with_normalization`."""
from advgeom.models.base import Classifier, Normalize, create_model
from advgeom.models.wrap import Normalized, with_normalization
from advgeom.registry import import_submodules

import_submodules(__name__)

__all__ = ["Classifier", "Normalize", "Normalized", "create_model", "with_normalization"]
