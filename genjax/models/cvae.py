"""The report's VAE conditioned on the class (Kingma et al. 2014, M2-style conditioning)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.models.autoencoder import VAE


class CVAE(VAE):
    """The VAE's layers (its setup) with a one-hot label y [B, num_classes] joined to the
    flattened image before the encoder and to the latent code before the decoder:
    [x, y] -> Dense(hidden, relu) -> (z_mean, z_log_var) -> z; [z, y] -> Dense(hidden, relu)
    -> Dense(784) logits. The label's width comes from y's shape when initialised.

    y is a float vector, so a soft label (a line between two one-hots) decodes too.
    """

    def encode(self, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, 28, 28, 1] in [0, 1], y [B, classes] -> (z_mean, z_log_var), [B, latent_dim]."""
        h = nn.relu(self.encoder_hidden(jnp.concatenate([x.reshape(x.shape[0], -1), y], -1)))
        return self.z_mean(h), self.z_log_var(h)

    def decode_logits(self, z: jax.Array, y: jax.Array) -> jax.Array:
        """z [B, latent_dim], y [B, classes] -> Bernoulli logits [B, 28, 28, 1]."""
        h = nn.relu(self.decoder_hidden(jnp.concatenate([z, y], -1)))
        return self.decoder_output(h).reshape(z.shape[0], *self.image_shape)

    def decode(self, z: jax.Array, y: jax.Array) -> jax.Array:
        """z, y -> images in [0, 1] (the sigmoid of the logits)."""
        return nn.sigmoid(self.decode_logits(z, y))

    def __call__(self, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(x, y) -> (logits [B, 28, 28, 1], z_mean, z_log_var), z drawn on the "latent" stream."""
        z_mean, z_log_var = self.encode(x, y)
        eps = jax.random.normal(self.make_rng("latent"), z_mean.shape, z_mean.dtype)
        z = z_mean + jnp.exp(0.5 * z_log_var) * eps
        return self.decode_logits(z, y), z_mean, z_log_var
