"""The conditional GAN of Keras-GAN (cgan/cgan.py), layer for layer, in Flax Linen.

Both networks take and give labelled pairs: the generator turns (noise, labels) into
(images, labels), the discriminator judges (images, labels). So a generated pair is what the
discriminator reads, and the DCGAN's discriminator and generator phases
(genjax/steps/dcgan.py) train the CGAN unchanged.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.models.dcgan import BN_EPSILON, BN_MOMENTUM


def _embed_init(key, shape, dtype=jnp.float32):
    """Keras's Embedding initializer, U(-0.05, 0.05): the embedding scales the noise and the
    pixels it multiplies, so it keeps Keras's scale (Dense layers keep Flax's, as the DCGAN)."""
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


class Generator(nn.Module):
    """(z [B, latent_dim], labels int [B]) -> (images [B, 28, 28, C] in [-1, 1], labels)."""

    latent_dim: int = 100
    num_classes: int = 10
    image_shape: tuple[int, int, int] = (28, 28, 1)

    @nn.compact
    def __call__(self, inputs: tuple[jax.Array, jax.Array], train: bool):
        z, labels = inputs
        x = z * nn.Embed(self.num_classes, self.latent_dim, embedding_init=_embed_init)(labels)
        for width in (256, 512, 1024):
            x = nn.leaky_relu(nn.Dense(width)(x), negative_slope=0.2)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON
            )(x)
        x = jnp.tanh(nn.Dense(math.prod(self.image_shape))(x))  # [B, 784]
        return x.reshape(z.shape[0], *self.image_shape), labels


class Discriminator(nn.Module):
    """(images [B, 28, 28, C] in [-1, 1], labels int [B]) -> logits [B] (sigmoid = P(real))."""

    num_classes: int = 10
    dropout_rate: float = 0.4

    @nn.compact
    def __call__(self, inputs: tuple[jax.Array, jax.Array], train: bool) -> jax.Array:
        images, labels = inputs
        x = images.reshape(images.shape[0], -1)  # [B, 784]
        x = x * nn.Embed(self.num_classes, x.shape[-1], embedding_init=_embed_init)(labels)
        x = nn.leaky_relu(nn.Dense(512)(x), negative_slope=0.2)
        for _ in range(2):
            x = nn.leaky_relu(nn.Dense(512)(x), negative_slope=0.2)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(1)(x)[:, 0]
