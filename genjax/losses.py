"""Per-example losses: each returns one value per example, [B]; steps reduce over the batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def mean_squared_error(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """Mean over pixels of (x - x_hat)^2, as Keras's `mse` on flattened images: [B, ...] -> [B]."""
    return jnp.mean(jnp.square(x - x_hat).reshape(x.shape[0], -1), axis=-1)


def sum_squared_error(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """Sum over pixels of (x - x_hat)^2: the report's 784 * MSE for 28x28 images. [B]"""
    return jnp.sum(jnp.square(x - x_hat).reshape(x.shape[0], -1), axis=-1)


def bernoulli_nll(x: jax.Array, logits: jax.Array) -> jax.Array:
    """-log p(x | logits) in nats, summed over pixels: binary cross-entropy on logits. [B]"""
    per_pixel = optax.sigmoid_binary_cross_entropy(logits, x)
    return jnp.sum(per_pixel.reshape(x.shape[0], -1), axis=-1)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, I)) in closed form, summed over latent dims. [B]"""
    return -0.5 * jnp.sum(1.0 + log_var - jnp.square(mean) - jnp.exp(log_var), axis=-1)


def gaussian_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * jnp.sum(
        jnp.log(2.0 * jnp.pi) + log_var + jnp.square(z - mean) * jnp.exp(-log_var), axis=-1
    )
