"""Per-example losses: each returns one value per example, [B]; steps reduce over the batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mean_squared_error(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """Mean over pixels of (x - x_hat)^2, as Keras's `mse` on flattened images: [B, ...] -> [B]."""
    return jnp.mean(jnp.square(x - x_hat).reshape(x.shape[0], -1), axis=-1)
