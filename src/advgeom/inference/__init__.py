"""advgeom.inference."""
