"""The DCGAN of Keras-GAN (dcgan/dcgan.py), layer for layer, in Flax Linen."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras's BatchNormalization(momentum=0.8): moving = 0.8 * moving + 0.2 * batch, as Flax's
# momentum; Keras's epsilon is 1e-3 (Flax's default is 1e-5).
BN_MOMENTUM = 0.8
BN_EPSILON = 1e-3


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 (Keras UpSampling2D), [B, H, W, C] -> [B, 2H, 2W, C].

    Broadcast and reshape: faster than jax.image.resize on XLA:CPU.
    """
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMENSIONS)


def _matmul_convolutions() -> bool:
    """Whether convolutions are restated as matrix products (the generator's gradients, the
    discriminator's layers; below).

    Measured on XLA:CPU only, where its convolutions are slow; GPU and TPU take the plain
    convolutions (cuDNN's and the TPU's are the ones to beat there)."""
    return jax.default_backend() == "cpu"


def _parity_taps(kernel: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """A 3-tap kernel axis as the two 2-tap kernels that even and odd outputs apply to x."""
    k0, k1, k2 = (jax.lax.index_in_dim(kernel, i, axis) for i in range(3))
    # Output 2i reads upsampled rows 2i-1, 2i, 2i+1 = x rows i-1, i, i: taps (k0, k1 + k2)
    # at offsets (-1, 0). Output 2i+1 reads rows 2i, 2i+1, 2i+2 = x rows i, i, i+1: taps
    # (k0 + k1, k2) at offsets (0, +1). So a tap t of parity p reads x at offset p + t - 1.
    return jnp.concatenate([k0, k1 + k2], axis), jnp.concatenate([k0 + k1, k2], axis)


def _parity_padding(row_parity: int, col_parity: int):
    return tuple((1, 0) if parity == 0 else (0, 1) for parity in (row_parity, col_parity))


@jax.custom_vjp
def _parity_convs(x: jax.Array, taps: jax.Array) -> jax.Array:
    """x [B, H, W, Cin], taps [row parity, col parity, row tap, col tap, Cin, Cout] (all 2)
    -> [B, 2H, 2W, Cout]: the four 2x2 parity convolutions of x, interleaved."""
    b, h, w, _ = x.shape
    rows = [
        jnp.stack([_conv(x, taps[rp, cp], _parity_padding(rp, cp)) for cp in range(2)], axis=3)
        for rp in range(2)
    ]  # Each [B, H, W, col parity, Cout].
    y = jnp.stack(rows, axis=2)  # [B, H, row parity, W, col parity, Cout]
    return y.reshape(b, 2 * h, 2 * w, taps.shape[-1])


def _tap_cotangents(g: jax.Array) -> jax.Array:
    """g [B, 2H, 2W, C], the output gradient -> [B, H, W, 16, C]: for each input pixel and
    each of the 16 (parity, tap) pairs, the gradient of the output that the tap carries that
    pixel to (zero where that output falls outside the image)."""
    b, h2, w2, c = g.shape
    h, w = h2 // 2, w2 // 2
    g = g.reshape(b, h, 2, w, 2, c)
    taps = []
    for rp in range(2):
        for cp in range(2):
            # Padded by one pixel each side: the tap of offset o = p + t - 1 carries input
            # pixel i to output i - o, at padded index i + 2 - p - t.
            padded = jnp.pad(g[:, :, rp, :, cp], ((0, 0), (1, 1), (1, 1), (0, 0)))
            for rt in range(2):
                for ct in range(2):
                    r, c0 = 2 - rp - rt, 2 - cp - ct
                    taps.append(padded[:, r : r + h, c0 : c0 + w])
    # Stacked on a middle axis: of the layouts timed, the one XLA:CPU writes fastest.
    return jnp.stack(taps, axis=3)


def _parity_convs_fwd(x, taps):
    return _parity_convs(x, taps), (x, taps)


def _parity_convs_bwd(residuals, g):
    """Both gradients as two matrix products over all 16 taps at once.

    The output gradient of every tap, moved to the input pixel that tap reads, is one
    [B*H*W, 16*Cout] matrix; the input gradient is it times the taps' [16*Cout, Cin], the
    taps' gradient is x's [Cin, B*H*W] times it: the same multiply-adds as the convolution
    gradients, at matmul speed, which XLA:CPU's convolution gradients do not reach
    (docs/performance.md).
    """
    x, taps = residuals
    b, h, w, cin = x.shape
    cout = taps.shape[-1]
    if not _matmul_convolutions():
        # Transposes of the linear maps, not a vjp: a vjp would trace the forward
        # convolutions again (dead code XLA drops, but the jaxpr's FLOP count would not).
        (dx,) = jax.linear_transpose(lambda x: _parity_convs.fun(x, taps), x)(g)
        (dtaps,) = jax.linear_transpose(lambda t: _parity_convs.fun(x, t), taps)(g)
        return dx, dtaps
    cotangents = _tap_cotangents(g).reshape(b * h * w, 16 * cout)
    weights = jnp.moveaxis(taps, 4, 0).reshape(cin, 16 * cout)  # [Cin, (taps, Cout)]
    dx = (cotangents @ weights.T).reshape(x.shape)
    dweights = x.reshape(b * h * w, cin).T @ cotangents
    return dx, jnp.moveaxis(dweights.reshape(cin, 2, 2, 2, 2, cout), 0, 4)


_parity_convs.defvjp(_parity_convs_fwd, _parity_convs_bwd)


def upsample2_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """conv3x3_same(upsample2(x), kernel) without building the upsampled image.

    x [B, H, W, Cin], kernel [3, 3, Cin, Cout] -> [B, 2H, 2W, Cout]. An output pixel of a
    nearest x2 upsampling followed by a 3x3 "same" convolution sees only 2x2 distinct input
    pixels, so each of the four output parities is a 2x2 convolution of x with summed
    taps, and the four are interleaved: the same function (up to float rounding: taps are
    summed before they multiply) in 4/9 of the FLOPs, and without the 28x28 convolution
    whose kernel gradient XLA:CPU lowers very slowly. The forward pass is XLA's
    convolutions, the gradients matrix products (_parity_convs_bwd). Zero padding at the
    borders matches: a tap that falls outside the upsampled image falls outside x.
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"upsample2_conv3x3 takes a 3x3 kernel, got {kernel.shape[:2]}")
    rows = [_parity_taps(row_kernel, 1) for row_kernel in _parity_taps(kernel, 0)]
    return _parity_convs(x, jnp.stack([jnp.stack(row) for row in rows]))


def conv3x3_few_outputs(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """conv3x3_same(x, kernel) for few output channels, as one matrix product and a sum of
    shifted slices: each input pixel times all nine taps ([B*H*W, Cin] x [Cin, 9*Cout]),
    then every output pixel adds the nine products its taps read. Same multiply-adds.

    For the generator's last layer (64 -> 1 channel at 28x28), where XLA:CPU's convolution
    and its gradients run far below matmul speed. With many output channels the 9*Cout
    products per pixel would outweigh the saving: there conv_as_matmul (im2col) fits; here
    its patches would be 9*Cin = 576 wide per pixel against 9*Cout = 9.
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"conv3x3_few_outputs takes a 3x3 kernel, got {kernel.shape[:2]}")
    b, h, w, cin = x.shape
    cout = kernel.shape[-1]
    products = x.reshape(b * h * w, cin) @ jnp.moveaxis(kernel, 2, 0).reshape(cin, 9 * cout)
    products = jnp.pad(
        products.reshape(b, h, w, 3, 3, cout), ((0, 0), (1, 1), (1, 1), *[(0, 0)] * 3)
    )
    # Output (i, j) reads input (i + a - 1, j + b - 1) through tap (a, b): padded (i + a, j + b).
    return sum(products[:, a : a + h, c : c + w, a, c] for a in range(3) for c in range(3))


class Conv3x3(nn.Module):
    """Keras's Conv2D(features, 3, padding="same"), after UpSampling2D() when `upsample`, as
    one layer: upsample2_conv3x3 or, not upsampling, conv3x3_few_outputs (the generator's
    last layer is its only use here).

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
        if self.upsample:
            return upsample2_conv3x3(x, kernel) + bias
        return conv3x3_few_outputs(x, kernel) + bias


def conv_as_matmul(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
) -> jax.Array:
    """lax.conv_general_dilated, as nn.Conv calls it, for NHWC/HWIO, undilated and ungrouped
    convolutions: the input's patches (im2col: each output pixel's kh x kw x Cin window, one
    row) times the kernel as a [kh*kw*Cin, Cout] matrix. The same multiply-adds, forward and
    backward; autodiff makes both gradients matmuls too.

    For the discriminator on CPU, where XLA:CPU's convolutions and their gradients on these
    small grids run slower than these matmuls (docs/performance.md).
    """
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSIONS)
    dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if (
        jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc
        or dilated
        or feature_group_count != 1
    ):
        raise ValueError(
            "conv_as_matmul takes NHWC inputs and HWIO kernels, undilated, ungrouped; "
            "use jax.lax.conv_general_dilated for other convolutions"
        )
    b, h, w, cin = lhs.shape
    kh, kw, _, cout = rhs.shape
    sh, sw = window_strides
    # Patches by strided slices, not lax.conv_general_dilated_patches: that is itself a
    # convolution (an identity kernel) on XLA:CPU, timed >2x slower here for these layers.
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads((h, w), (kh, kw), window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    windows = [
        x[:, a : a + sh * (ho - 1) + 1 : sh, c : c + sw * (wo - 1) + 1 : sw]
        for a in range(kh)
        for c in range(kw)
    ]
    patches = jnp.stack(windows, axis=3).reshape(b * ho * wo, kh * kw * cin)
    y = jnp.matmul(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)
    return y.reshape(b, ho, wo, cout)


def discriminator_conv(*args, **kwargs) -> jax.Array:
    """The discriminator's convolution: conv_as_matmul on CPU (measured faster there), XLA's
    convolution elsewhere (cuDNN's and the TPU's are the ones to beat; not measured)."""
    conv = conv_as_matmul if _matmul_convolutions() else jax.lax.conv_general_dilated
    return conv(*args, **kwargs)


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
            x = nn.Conv(
                features,
                (3, 3),
                strides=strides,
                padding="SAME",
                conv_general_dilated=discriminator_conv,
            )(x)
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
