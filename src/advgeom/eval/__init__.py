"""advgeom.eval."""
