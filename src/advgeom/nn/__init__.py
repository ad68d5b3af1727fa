"""advgeom.nn."""
