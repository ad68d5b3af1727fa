"""advgeom.train."""
