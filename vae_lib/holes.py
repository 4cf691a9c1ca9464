"""Holes in a 2-D code space: where codes are sparse, by nearest-neighbour distance.

Notebook 01 defines the metric for an autoencoder's codes and notebook 05 applies it to a
VAE's: a point of the code space is *in a hole* when its distance to the nearest code of a
real image exceeds the radius within which 99 % of the codes have another code. The metric
counts sparse regions of the code space, not bad pictures: a point in a hole can still decode
to a clear garment.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike
from scipy.spatial import KDTree

__all__ = ["hole_radius", "in_holes", "nearest_code_distance", "neighbour_distances"]


def _points(x: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"{what} must be a finite array of shape (N, D); got shape {a.shape}.")
    return a


def neighbour_distances(codes: ArrayLike) -> np.ndarray:
    """Each code's distance to its nearest *other* code, (N,), for (N, D) codes, N >= 2."""
    codes = _points(codes, "codes")
    if len(codes) < 2:
        raise ValueError("neighbour_distances needs at least two codes.")
    return KDTree(codes).query(codes, k=2)[0][:, 1]


def nearest_code_distance(codes: ArrayLike, points: ArrayLike) -> np.ndarray:
    """Each point's distance to its nearest code, (M,), for (N, D) codes and (M, D) points."""
    codes, points = _points(codes, "codes"), _points(points, "points")
    if points.shape[1] != codes.shape[1]:
        raise ValueError(f"points have {points.shape[1]} dimensions; the codes have {codes.shape[1]} dimensions.")
    return KDTree(codes).query(points)[0]


def hole_radius(codes: ArrayLike, quantile: float = 0.99) -> float:
    """The `quantile` of each code's distance to its nearest *other* code (:func:`neighbour_distances`).

    Args:
      codes: (N, D) codes of real images, N >= 2.
      quantile: the share of codes that count as not isolated (0.99: 1 % of the codes are
        themselves in holes).

    Returns:
      The radius, in code units.
    """
    return float(np.quantile(neighbour_distances(codes), quantile))


def in_holes(codes: ArrayLike, points: ArrayLike, radius: float | None = None) -> np.ndarray:
    """Which `points` lie farther than `radius` from every code (a boolean array of N_points).

    Args:
      codes: (N, D) codes of real images.
      points: (M, D) points of the code space (a grid, samples of the prior ...).
      radius: the hole radius; ``hole_radius(codes)`` when None.
    """
    radius = hole_radius(codes) if radius is None else float(radius)
    return nearest_code_distance(codes, points) > radius
