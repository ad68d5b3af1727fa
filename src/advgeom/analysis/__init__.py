"""advgeom.analysis."""
