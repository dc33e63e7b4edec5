"""The DCGAN of Keras-GAN (dcgan/dcgan.py), layer for layer, in Flax Linen."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras's BatchNormalization(momentum=0.8): moving = 0.8 * moving + 0.2 * batch, as Flax's
# momentum; Keras's epsilon is 1e-3 (Flax's default is 1e-5).
BN_MOMENTUM = 0.8
BN_EPSILON = 1e-3


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 (Keras UpSampling2D), [B, H, W, C] -> [B, 2H, 2W, C].

    Broadcast and reshape: measured ~17% faster than jax.image.resize on this CPU.
    """
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_chunked_kernel_grad(x: jax.Array, kernel: jax.Array, padding, chunk: int) -> jax.Array:
    """A stride-1 NHWC convolution whose kernel gradient is summed over batch chunks of
    `chunk` images (0: the whole batch at once, plain autodiff).

    XLA:CPU computes a kernel gradient as one convolution whose "kernel" is the output
    gradient; once batch x height x width passes a few thousand positions it slows down by
    up to 7x (timed alone here: the generator's 14x14 parity convolutions at batch 128, 375 ms
    whole vs 58 ms in chunks of 4; its last 28x28 one, 104 ms vs 24 ms in chunks of 8). The
    same sum, in another order; the value and the input gradient are untouched.
    """
    return _conv(x, kernel, padding)


def _chunked_fwd(x, kernel, padding, chunk):
    return _conv(x, kernel, padding), (x, kernel)


def _chunked_bwd(padding, chunk, residuals, g):
    x, kernel = residuals
    # Transposes of the linear maps, not vjps: a vjp would trace the forward convolution
    # again (dead code XLA drops, but the FLOP count of the jaxpr would not).
    (dx,) = jax.linear_transpose(lambda x: _conv(x, kernel, padding), x)(g)
    step = chunk or x.shape[0]
    # A Python loop, unrolled into the program: convolutions inside lax.scan/map run very
    # slowly on XLA:CPU (jax-ml/jax issue 12868).
    dk = sum(
        jax.linear_transpose(lambda k, i=i: _conv(x[i : i + step], k, padding), kernel)(
            g[i : i + step]
        )[0]
        for i in range(0, x.shape[0], step)
    )
    return dx, dk


conv_chunked_kernel_grad.defvjp(_chunked_fwd, _chunked_bwd)


def kernel_grad_chunk(measured: int) -> int:
    """The chunk to use here: the one measured on XLA:CPU on a lone CPU device, else 0 (GPU
    and TPU kernels take the whole batch well; over several devices the batch is sharded and
    chunks would cut across the shards)."""
    return measured if jax.default_backend() == "cpu" and jax.device_count() == 1 else 0


def _parity_taps(kernel: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """A 3-tap kernel axis as the two 2-tap kernels that even and odd outputs apply to x."""
    k0, k1, k2 = (jax.lax.index_in_dim(kernel, i, axis) for i in range(3))
    # Output 2i reads upsampled rows 2i-1, 2i, 2i+1 = x rows i-1, i, i: taps (k0, k1 + k2)
    # at offsets (-1, 0). Output 2i+1 reads rows 2i, 2i+1, 2i+2 = x rows i, i, i+1: taps
    # (k0 + k1, k2) at offsets (0, +1).
    return jnp.concatenate([k0, k1 + k2], axis), jnp.concatenate([k0 + k1, k2], axis)


def upsample2_conv3x3(x: jax.Array, kernel: jax.Array, chunk: int = 0) -> jax.Array:
    """conv3x3_same(upsample2(x), kernel) without building the upsampled image.

    x [B, H, W, Cin], kernel [3, 3, Cin, Cout] -> [B, 2H, 2W, Cout]. An output pixel of a
    nearest x2 upsampling followed by a 3x3 "same" convolution sees only 2x2 distinct input
    pixels, so each of the four output parities is a 2x2 convolution of x with summed
    taps, and the four are interleaved. The same function (up to float rounding: taps are
    summed before they multiply), 4/9 of the FLOPs, and, the reason it is here: XLA:CPU
    lowers the kernel gradient of the plain 28x28 convolution very badly (the generator's
    second convolution at batch 32: 950 ms, 3.9 GFLOP/s; here its forward and backward
    together take ~100 ms). Zero padding at the borders matches: a tap that falls outside
    the upsampled image falls outside x.
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"upsample2_conv3x3 takes a 3x3 kernel, got {kernel.shape[:2]}")
    b, h, w, _ = x.shape
    rows = []
    for row_parity, row_kernel in enumerate(_parity_taps(kernel, 0)):
        cols = []
        for col_parity, k in enumerate(_parity_taps(row_kernel, 1)):
            padding = ((1, 0) if row_parity == 0 else (0, 1), (1, 0) if col_parity == 0 else (0, 1))
            cols.append(conv_chunked_kernel_grad(x, k, padding, chunk))
        rows.append(jnp.stack(cols, axis=3))  # [B, H, W, col parity, Cout]
    y = jnp.stack(rows, axis=2)  # [B, H, row parity, W, col parity, Cout]
    return y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])


class Conv3x3(nn.Module):
    """Keras's Conv2D(features, 3, padding="same"), after UpSampling2D() when `upsample`, as
    one layer, with the kernel gradient in batch chunks on CPU (conv_chunked_kernel_grad).

    The parameters are nn.Conv's (kernel [3, 3, Cin, features], bias), with its
    initializers, so a generator built from these initialises, trains and restores exactly
    as one built from upsample2 and nn.Conv.
    """

    features: int
    upsample: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.linear.default_kernel_init, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        if self.upsample:  # Chunks of 4 images: measured best for the 7x7 and 14x14 grids.
            return upsample2_conv3x3(x, kernel, kernel_grad_chunk(4)) + bias
        # Chunks of 8: measured best for the 28x28 one (4: 3x slower; 16, 32: no better).
        return conv_chunked_kernel_grad(x, kernel, "SAME", kernel_grad_chunk(8)) + bias


class Generator(nn.Module):
    """z [B, latent_dim] -> images [B, 28, 28, channels] in [-1, 1]."""

    latent_dim: int = 100
    channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        def bn(x):
            return nn.BatchNorm(
                use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON
            )(x)

        x = nn.relu(nn.Dense(128 * 7 * 7)(z)).reshape(z.shape[0], 7, 7, 128)  # [B, 7, 7, 128]
        # Named as nn.Conv would autoname them, so parameters and checkpoints keep the
        # layout of the plain upsample2 + nn.Conv generator.
        x = Conv3x3(128, upsample=True, name="Conv_0")(x)  # [B, 14, 14, 128]
        x = nn.relu(bn(x))
        x = Conv3x3(64, upsample=True, name="Conv_1")(x)  # [B, 28, 28, 64]
        x = nn.relu(bn(x))
        x = Conv3x3(self.channels, name="Conv_2")(x)  # [B, 28, 28, C]
        return jnp.tanh(x)


class Discriminator(nn.Module):
    """images [B, 28, 28, C] in [-1, 1] -> logits [B] (losses take logits; sigmoid = P(real))."""

    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def block(x, features, strides, bn=True, pad=False):
            x = nn.Conv(features, (3, 3), strides=strides, padding="SAME")(x)
            if pad:  # Keras's ZeroPadding2D(((0, 1), (0, 1))): bottom and right.
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            if bn:
                x = nn.BatchNorm(
                    use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON
                )(x)
            x = nn.leaky_relu(x, negative_slope=0.2)
            return nn.Dropout(self.dropout_rate, deterministic=not train)(x)

        x = block(x, 32, 2, bn=False)  # [B, 14, 14, 32]
        x = block(x, 64, 2, pad=True)  # [B, 8, 8, 64]
        x = block(x, 128, 2)  # [B, 4, 4, 128]
        x = block(x, 256, 1)  # [B, 4, 4, 256]
        x = x.reshape(x.shape[0], -1)  # [B, 4096]
        return nn.Dense(1)(x)[:, 0]
