"""advgeom.inference: decision rules that can abstain (robust geodesic inference of
hyperspherical-defense.txt, :mod:`advgeom.inference.geodesic`)."""
from advgeom.inference.geodesic import GeodesicRejector, angle_statistics, class_angles

__all__ = ["GeodesicRejector", "angle_statistics", "class_angles"]
