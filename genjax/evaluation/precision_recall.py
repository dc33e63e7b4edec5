"""Improved precision and recall (Kynkaanniemi et al. 2019) of generated against real features.

Each set's manifold is the union of balls around its points, each ball reaching the point's
k-th nearest neighbour within the set. Precision: the fraction of generated points inside
the real manifold. Recall: the fraction of real points inside the generated manifold. All
distances are computed on the device in row blocks, so N = 10,000 never builds the full
N x N matrix at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """[n, D] x [m, D] -> [n, m] squared Euclidean distances (clipped at 0)."""
    d = jnp.sum(a * a, 1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, 1)[None, :]
    return jnp.maximum(d, 0.0)


def _blocks(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(block, n - s)) for s in range(0, n, block)]


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_block(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
    # The k+1 smallest: the point itself (distance 0) comes first.
    smallest = -jax.lax.top_k(-_squared_distances(rows, points), k + 1)[0]
    return smallest[:, k]


@jax.jit
def _inside_block(rows: jax.Array, points: jax.Array, radii: jax.Array) -> jax.Array:
    return jnp.any(_squared_distances(rows, points) <= radii[None, :], axis=1)


def kth_neighbour_radii(points, k: int = 3, block: int = 1000) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point in the set."""
    points = jnp.asarray(points, jnp.float32)
    if points.shape[0] <= k:
        raise ValueError(f"need more than k={k} points, got {points.shape[0]}")
    out = [
        _kth_neighbour_block(points[s : s + n], points, k) for s, n in _blocks(len(points), block)
    ]
    return np.concatenate([np.asarray(o) for o in out])


def coverage(queries, points, radii, block: int = 1000) -> float:
    """Fraction of queries inside the union of balls (points, squared radii)."""
    queries = jnp.asarray(queries, jnp.float32)
    points, radii = jnp.asarray(points, jnp.float32), jnp.asarray(radii, jnp.float32)
    inside = [
        _inside_block(queries[s : s + n], points, radii) for s, n in _blocks(len(queries), block)
    ]
    return float(np.mean(np.concatenate([np.asarray(i) for i in inside])))


def precision_recall(
    real, generated, k: int = 3, block: int = 1000, real_radii=None
) -> tuple[float, float]:
    """(precision, recall) of generated features [M, D] against real features [N, D].

    real_radii: kth_neighbour_radii(real, k), when the caller keeps it across evaluations.
    """
    if real_radii is None:
        real_radii = kth_neighbour_radii(real, k, block)
    generated_radii = kth_neighbour_radii(generated, k, block)
    precision = coverage(generated, real, real_radii, block)
    recall = coverage(real, generated, generated_radii, block)
    return precision, recall
