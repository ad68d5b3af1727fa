"""Architectures, registered by name; ``create_model(name, **kw)`` builds one."""
from advgeom.models.base import Classifier, Normalize, create_model
from advgeom.registry import import_submodules

import_submodules(__name__)

__all__ = ["Classifier", "Normalize", "create_model"]
