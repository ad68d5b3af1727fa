"""Training objectives and regularizers, one module per family, registered as ``defense``."""
from advgeom.registry import import_submodules

import_submodules(__name__)
