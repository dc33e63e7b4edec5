"""Keras-GAN's adversarial autoencoder (aae/aae.py), layer for layer, in Flax Linen."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

LEAKY_SLOPE = 0.2  # Keras-GAN's LeakyReLU(alpha=0.2), in all three networks.


class AdversarialAutoencoder(nn.Module):
    """Encoder: Flatten -> Dense(hidden) -> LReLU -> Dense(hidden) -> LReLU -> (mu, log_var),
    z = mu + eps * exp(log_var / 2) with eps on the "latent" stream. Decoder: Dense(hidden)
    -> LReLU -> Dense(hidden) -> LReLU -> Dense(784, tanh) -> [28, 28, 1]. One module, as
    Keras-GAN's combined model trains both with one optimizer."""

    latent_dim: int = 10
    hidden_dim: int = 512
    image_shape: tuple[int, int, int] = (28, 28, 1)

    def setup(self):
        self.encoder_hidden = [nn.Dense(self.hidden_dim) for _ in range(2)]
        self.mu = nn.Dense(self.latent_dim)
        self.log_var = nn.Dense(self.latent_dim)
        self.decoder_hidden = [nn.Dense(self.hidden_dim) for _ in range(2)]
        self.decoder_output = nn.Dense(
            self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        )

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, 28, 28, 1] in [-1, 1] -> (mu, log_var), each [B, latent_dim]."""
        h = x.reshape(x.shape[0], -1)
        for dense in self.encoder_hidden:
            h = nn.leaky_relu(dense(h), negative_slope=LEAKY_SLOPE)
        return self.mu(h), self.log_var(h)

    def code(self, x: jax.Array) -> jax.Array:
        """The encoder's output as Keras-GAN's: z = mu + eps * exp(log_var / 2). [B, latent_dim]"""
        mu, log_var = self.encode(x)
        eps = jax.random.normal(self.make_rng("latent"), mu.shape, mu.dtype)
        return mu + eps * jnp.exp(log_var / 2)

    def decode(self, z: jax.Array) -> jax.Array:
        """[B, latent_dim] -> images [B, 28, 28, 1] in [-1, 1]."""
        h = z
        for dense in self.decoder_hidden:
            h = nn.leaky_relu(dense(h), negative_slope=LEAKY_SLOPE)
        return jnp.tanh(self.decoder_output(h)).reshape(z.shape[0], *self.image_shape)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x -> (reconstruction [B, 28, 28, 1], code z [B, latent_dim])."""
        z = self.code(x)
        return self.decode(z), z


class LatentDiscriminator(nn.Module):
    """Codes [B, latent_dim] -> logits [B]: Dense(512) -> LReLU -> Dense(256) -> LReLU ->
    Dense(1) (the losses take logits; sigmoid = P(drawn from the prior)).

    `train` changes nothing (no BatchNorm, no dropout): it keeps the DCGAN discriminator's
    call, so that steps.dcgan's discriminator update serves both."""

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        h = nn.leaky_relu(nn.Dense(512)(z), negative_slope=LEAKY_SLOPE)
        h = nn.leaky_relu(nn.Dense(256)(h), negative_slope=LEAKY_SLOPE)
        return nn.Dense(1)(h)[:, 0]


# The mixture prior: the AAE paper's (Makhzani et al. 2015, fig. 4) ten 2-D Gaussians on a
# circle, each stretched along its radius.
MIXTURE_COMPONENTS = 10
MIXTURE_RADIUS = 2.0  # Distance of each component's mean from the origin.
MIXTURE_RADIAL_STD = 0.5  # Standard deviation along the radius...
MIXTURE_TANGENTIAL_STD = 0.1  # ...and across it.


def mixture_prior(key: jax.Array, num: int, latent_dim: int) -> jax.Array:
    """[num, latent_dim] draws of the mixture of 10 Gaussians (latent_dim >= 2).

    In 2-D, component k (uniform) has its mean at angle 2 pi k / 10 on the circle of radius
    MIXTURE_RADIUS, its axes along and across that radius. Above 2-D, every pair of
    coordinates (0, 1), (2, 3), ... holds an independent draw of the same component's 2-D
    Gaussian, and an odd last coordinate is N(0, 1): still ten clusters, whose means lie in
    one plane, so the PCA of codes that match the prior shows the same circle.
    """
    component_key, radial_key, tangential_key, odd_key = jax.random.split(key, 4)
    k = jax.random.randint(component_key, (num, 1), 0, MIXTURE_COMPONENTS)
    angle = 2.0 * jnp.pi * k / MIXTURE_COMPONENTS  # [num, 1]
    pairs = latent_dim // 2
    along = MIXTURE_RADIUS + MIXTURE_RADIAL_STD * jax.random.normal(radial_key, (num, pairs))
    across = MIXTURE_TANGENTIAL_STD * jax.random.normal(tangential_key, (num, pairs))
    x = along * jnp.cos(angle) - across * jnp.sin(angle)
    y = along * jnp.sin(angle) + across * jnp.cos(angle)
    z = jnp.stack([x, y], axis=-1).reshape(num, 2 * pairs)
    if latent_dim % 2:
        z = jnp.concatenate([z, jax.random.normal(odd_key, (num, 1))], axis=-1)
    return z


def sample_prior(key: jax.Array, prior: str, num: int, latent_dim: int) -> jax.Array:
    """[num, latent_dim] draws of the prior: "gaussian" N(0, I) or "mixture" (above)."""
    if prior == "mixture":
        return mixture_prior(key, num, latent_dim)
    return jax.random.normal(key, (num, latent_dim))
