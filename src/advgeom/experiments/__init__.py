"""One module per paper table or figure, registered as ``experiment``."""
from advgeom.registry import import_submodules

import_submodules(__name__)
