"""Attacks: one pure function each, one argument vocabulary (DESIGN.md "Contracts")."""
from advgeom.registry import import_submodules

import_submodules(__name__)
