"""The WGAN-GP of Keras-GAN (wgan_gp/wgan_gp.py), layer for layer, in Flax Linen."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.models.dcgan import BN_EPSILON, BN_MOMENTUM, discriminator_conv, upsample2


class Generator(nn.Module):
    """z [B, latent_dim] -> images [B, 28, 28, channels] in [-1, 1]."""

    latent_dim: int = 100
    channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        def conv_bn_relu(x, features):
            # Keras's "same" padding of a 4x4 kernel (1 before, 2 after), as Flax's "SAME".
            x = nn.Conv(features, (4, 4), padding="SAME")(upsample2(x))
            x = nn.BatchNorm(
                use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON
            )(x)
            return nn.relu(x)

        x = nn.relu(nn.Dense(128 * 7 * 7)(z)).reshape(z.shape[0], 7, 7, 128)  # [B, 7, 7, 128]
        x = conv_bn_relu(x, 128)  # [B, 14, 14, 128]
        x = conv_bn_relu(x, 64)  # [B, 28, 28, 64]
        return jnp.tanh(nn.Conv(self.channels, (4, 4), padding="SAME")(x))  # [B, 28, 28, C]


class Critic(nn.Module):
    """images [B, 28, 28, C] in [-1, 1] -> scores [B] (no sigmoid: a Wasserstein critic)."""

    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # (features, stride, BatchNorm, Keras's ZeroPadding2D(((0, 1), (0, 1))) after it)
        layers = ((16, 2, False, False), (32, 2, True, True), (64, 2, True, False),
                  (128, 1, True, False))  # fmt: skip
        for features, strides, bn, pad in layers:
            x = nn.Conv(
                features,
                (3, 3),
                strides=strides,
                padding="SAME",
                conv_general_dilated=discriminator_conv,
            )(x)
            if pad:
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            if bn:
                x = nn.BatchNorm(
                    use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON
                )(x)
            x = nn.leaky_relu(x, negative_slope=0.2)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        # [B, 14, 14, 16] -> [B, 8, 8, 32] -> [B, 4, 4, 64] -> [B, 4, 4, 128]
        return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]
