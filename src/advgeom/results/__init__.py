"""advgeom.results."""
