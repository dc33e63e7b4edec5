"""A small U-Net for 28x28 images, for diffusion (epsilon) and flow matching (velocity).

Levels at 28, 14 and 7 pixels with width, 2 * width and 2 * width channels; residual
blocks with group norm and the time added after their first convolution (Ho et al. 2020);
optionally self-attention at 7x7, where 49 tokens cost little.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.models.dcgan import Conv3x3

# The scale of the sinusoidal embedding's argument: a time in [0, 1] spans as many periods
# as DDPM's integer steps 0..999 do (Ho et al.'s embedding of t).
TIME_SCALE = 1000.0


def time_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding (Vaswani et al. 2017) of times t [B] in [0, 1] -> [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = TIME_SCALE * t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def _conv(features: int, kernel: int = 3, strides: int = 1, **kwargs) -> nn.Conv:
    # XLA's convolutions: the DCGAN discriminator's im2col form (conv_as_matmul) timed
    # slower here on CPU, at these widths.
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=strides,
        padding="SAME",
        **kwargs,
    )


def _norm(channels: int) -> nn.GroupNorm:
    # Groups of at most 8 that divide the channels, so any width works.
    return nn.GroupNorm(num_groups=math.gcd(8, channels))


class ResBlock(nn.Module):
    """GN, swish, conv, + time, GN, swish, conv; a 1x1 skip when the width changes."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = _conv(self.features)(nn.swish(_norm(x.shape[-1])(x)))
        h = h + nn.Dense(self.features)(nn.swish(emb))[:, None, None, :]
        h = nn.swish(_norm(self.features)(h))
        # Zero-initialised: each block starts as the identity, which trains deep stacks faster.
        h = _conv(self.features, kernel_init=nn.initializers.zeros_init())(h)
        if x.shape[-1] != self.features:
            x = _conv(self.features, kernel=1)(x)
        return x + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of [B, H, W, C], residual."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        qkv = nn.Dense(3 * c)(_norm(c)(x).reshape(b, h * w, c))
        q, k, v = jnp.split(qkv, 3, axis=-1)  # Each [B, HW, C].
        weights = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c), axis=-1)
        out = nn.Dense(c, kernel_init=nn.initializers.zeros_init())(
            jnp.einsum("bqk,bkc->bqc", weights, v)
        )
        return x + out.reshape(b, h, w, c)


class UNet(nn.Module):
    """x [B, 28, 28, C] and times t [B] (float in [0, 1]) -> [B, 28, 28, C].

    Diffusion passes its integer step over the number of steps, flow matching its time.
    """

    width: int = 32  # Channels at 28x28; 14x14 and 7x7 have twice as many.
    attention: bool = True  # Self-attention at 7x7.

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        c1, c2 = self.width, 2 * self.width
        emb = time_embedding(t, c1)
        emb = nn.Dense(4 * c1)(nn.swish(nn.Dense(4 * c1)(emb)))  # [B, 4 * width]
        h = _conv(c1)(x)  # [B, 28, 28, c1]
        h28 = ResBlock(c1)(h, emb)
        h = _conv(c2, strides=2)(h28)  # [B, 14, 14, c2]
        h14 = ResBlock(c2)(h, emb)
        h = _conv(c2, strides=2)(h14)  # [B, 7, 7, c2]
        h = ResBlock(c2)(h, emb)
        if self.attention:
            h = SelfAttention()(h)
        h = ResBlock(c2)(h, emb)
        h = Conv3x3(c2, upsample=True)(h)  # [B, 14, 14, c2]: nearest x2 and a 3x3 conv.
        h = ResBlock(c2)(jnp.concatenate([h, h14], axis=-1), emb)
        h = Conv3x3(c1, upsample=True)(h)  # [B, 28, 28, c1]
        h = ResBlock(c1)(jnp.concatenate([h, h28], axis=-1), emb)
        h = nn.swish(_norm(c1)(h))
        # Zero-initialised: the first prediction is 0, the mean of both targets.
        return _conv(x.shape[-1], kernel_init=nn.initializers.zeros_init())(h)
