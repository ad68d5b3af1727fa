"""advgeom: the geometry of adversarial robustness, five papers in one tool."""
from __future__ import annotations

__version__ = "0.1.0"

from advgeom.errors import AdvgeomError  # noqa: E402
from advgeom.registry import create, get, names, register  # noqa: E402

__all__ = ["AdvgeomError", "create", "get", "names", "register", "__version__"]
