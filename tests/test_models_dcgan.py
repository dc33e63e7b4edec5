"""The DCGAN's networks: Keras-GAN's layers and parameter counts, and the restatements of
its convolutions (as matrix products on CPU) computing the same function."""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import flops
from genjax.models import dcgan as dcgan_model
from genjax.models.dcgan import (
    BN_EPSILON,
    BN_MOMENTUM,
    Discriminator,
    Generator,
    conv3x3_few_outputs,
    conv_as_matmul,
    upsample2,
    upsample2_conv3x3,
)


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_parameter_counts_match_keras_gan():
    """Keras-GAN's model.summary(): generator 856,193 parameters of which 855,809 trainable;
    discriminator 393,729 of which 392,833 trainable (BN moving means/variances are not)."""
    g = jax.eval_shape(
        lambda: Generator().init(jax.random.key(0), jnp.zeros((2, 100)), train=False)
    )
    d = jax.eval_shape(
        lambda: Discriminator().init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
    )
    assert _count(g["params"]) == 855_809 and _count(g["params"]) + _count(g["batch_stats"]) == (
        856_193
    )
    assert _count(d["params"]) == 392_833 and _count(d["params"]) + _count(d["batch_stats"]) == (
        393_729
    )


def test_every_layer_output_shape():
    z = jnp.zeros((3, 100))
    g_vars = jax.eval_shape(lambda: Generator().init(jax.random.key(0), z, train=False))
    _, g_inter = jax.eval_shape(
        lambda v: Generator().apply(v, z, train=False, capture_intermediates=True), g_vars
    )
    shapes = {
        k: v["__call__"][0].shape for k, v in g_inter["intermediates"].items() if "__call__" in v
    }
    assert shapes["Dense_0"] == (3, 6272)
    assert shapes["Conv_0"] == (3, 14, 14, 128) and shapes["BatchNorm_0"] == (3, 14, 14, 128)
    assert shapes["Conv_1"] == (3, 28, 28, 64) and shapes["BatchNorm_1"] == (3, 28, 28, 64)
    assert shapes["Conv_2"] == (3, 28, 28, 1)

    x = jnp.zeros((3, 28, 28, 1))
    d_vars = jax.eval_shape(lambda: Discriminator().init(jax.random.key(0), x, train=False))
    _, d_inter = jax.eval_shape(
        lambda v: Discriminator().apply(v, x, train=False, capture_intermediates=True), d_vars
    )
    shapes = {
        k: v["__call__"][0].shape for k, v in d_inter["intermediates"].items() if "__call__" in v
    }
    assert shapes["Conv_0"] == (3, 14, 14, 32)
    assert shapes["Conv_1"] == (3, 7, 7, 64)
    assert shapes["BatchNorm_0"] == (3, 8, 8, 64)  # After the bottom/right zero padding.
    assert shapes["Conv_2"] == (3, 4, 4, 128) and shapes["Conv_3"] == (3, 4, 4, 256)
    assert shapes["Dense_0"] == (3, 1)
    assert d_inter["intermediates"]["__call__"][0].shape == (3,)


def test_upsample_is_nearest_neighbour():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(
        upsample2(x)[0, :, :, 0],
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]],
    )


def _plain_conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("shape", [(2, 3, 5, 3), (1, 7, 7, 4)])
def test_upsample_conv_equals_upsampling_then_convolving(shape):
    """The parity-split layer is the plain upsample + 3x3 'same' convolution, in value and in
    both gradients (the kernel gradient is what it exists to compute faster), borders
    included (odd and non-square sizes)."""
    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 6))
    fast, fast_vjp = jax.vjp(upsample2_conv3x3, x, kernel)
    plain, plain_vjp = jax.vjp(lambda x, k: _plain_conv(upsample2(x), k), x, kernel)
    chex.assert_shape(fast, (shape[0], 2 * shape[1], 2 * shape[2], 6))
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), plain.shape)
    for got, want in zip(fast_vjp(cotangent), plain_vjp(cotangent), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="3x3 kernel"):
        upsample2_conv3x3(x, kernel[:2])


@pytest.mark.parametrize("matmul_gradients", [True, False])
def test_upsample_conv_gradients_as_matmuls_are_the_convolution_gradients(
    monkeypatch, matmul_gradients
):
    """Both gradient paths of the parity-split layer (matrix products, taken on CPU; plain
    convolution gradients, taken on GPU/TPU) against autodiff of upsample + convolution, on
    a batch, border and channel counts where a wrongly shifted or transposed tap shows; and
    the matmul gradients do the convolution gradients' multiply-adds, no more."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 6))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 6, 7))
    cotangent = jax.random.normal(jax.random.key(2), (3, 10, 8, 7))
    monkeypatch.setattr(dcgan_model, "_matmul_convolutions", lambda: matmul_gradients)
    got = jax.vjp(upsample2_conv3x3, x, kernel)[1](cotangent)
    want = jax.vjp(lambda x, k: _plain_conv(upsample2(x), k), x, kernel)[1](cotangent)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
    both = functools.partial(jax.grad, argnums=(0, 1))
    flops_here = flops.count(both(lambda x, k: upsample2_conv3x3(x, k).sum()), x, kernel)
    monkeypatch.setattr(dcgan_model, "_matmul_convolutions", lambda: not matmul_gradients)
    assert flops_here == flops.count(both(lambda x, k: upsample2_conv3x3(x, k).sum()), x, kernel)


@pytest.mark.parametrize("shape, features", [((2, 6, 5, 4), 1), ((3, 7, 7, 8), 3)])
def test_few_output_convolution_equals_the_convolution(shape, features):
    """The generator's last layer as one matmul and shifted sums: the 3x3 'same'
    convolution's value, both gradients and FLOPs, borders included (odd, non-square)."""
    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], features))
    got, got_vjp = jax.vjp(conv3x3_few_outputs, x, kernel)
    want, want_vjp = jax.vjp(_plain_conv, x, kernel)
    chex.assert_shape(got, (*shape[:3], features))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), want.shape)
    for g, w in zip(got_vjp(cotangent), want_vjp(cotangent), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
    both = functools.partial(jax.grad, argnums=(0, 1))
    assert flops.count(both(lambda x, k: conv3x3_few_outputs(x, k).sum()), x, kernel) == (
        flops.count(both(lambda x, k: _plain_conv(x, k).sum()), x, kernel)
    )
    with pytest.raises(ValueError, match="3x3 kernel"):
        conv3x3_few_outputs(x, kernel[:2])


_NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "shape, kernel_shape, strides, padding",
    [
        ((2, 28, 28, 1), (3, 3, 1, 4), (2, 2), "SAME"),  # The discriminator's first layer.
        ((3, 7, 7, 5), (3, 3, 5, 6), (2, 2), "SAME"),  # Odd size at stride 2.
        ((2, 4, 5, 3), (3, 3, 3, 2), (1, 1), "SAME"),
        ((2, 9, 8, 3), (3, 2, 3, 2), (2, 1), ((1, 0), (0, 2))),  # Uneven everything.
    ],
)
def test_convolution_as_matmul_equals_the_convolution(shape, kernel_shape, strides, padding):
    """im2col times the kernel: the convolution's value, both gradients and FLOPs."""
    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)

    def ours(x, k):
        return conv_as_matmul(x, k, strides, padding, dimension_numbers=_NHWC)

    def xla(x, k):
        return jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=_NHWC)

    got, got_vjp = jax.vjp(ours, x, kernel)
    want, want_vjp = jax.vjp(xla, x, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), want.shape)
    for g, w in zip(got_vjp(cotangent), want_vjp(cotangent), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
    # Forward and both gradients, each the forward's multiply-adds: "training = 3x forward"
    # exactly. (flops.count's estimate for XLA's strided input gradient is exact only where
    # the stride divides the input, as in the discriminator: checked there below.)
    both = functools.partial(jax.grad, argnums=(0, 1))
    assert flops.count(both(lambda x, k: ours(x, k).sum()), x, kernel) == 3 * flops.count(
        xla, x, kernel
    )
    if all(n % s == 0 for n, s in zip(shape[1:3], strides, strict=True)):
        assert flops.count(both(lambda x, k: ours(x, k).sum()), x, kernel) == flops.count(
            both(lambda x, k: xla(x, k).sum()), x, kernel
        )


def test_convolution_as_matmul_refuses_what_it_does_not_restate():
    x = jnp.zeros((1, 6, 6, 2))
    kernel = jnp.zeros((3, 3, 2, 4))
    for kwargs in (
        {"dimension_numbers": ("NCHW", "OIHW", "NCHW")},
        {"dimension_numbers": _NHWC, "rhs_dilation": (2, 2)},
        {"dimension_numbers": _NHWC, "feature_group_count": 2},
    ):
        with pytest.raises(ValueError, match="NHWC inputs and HWIO kernels"):
            conv_as_matmul(x, kernel, (1, 1), "SAME", **kwargs)


def test_discriminator_with_matmul_convolutions_equals_xla_convolutions(monkeypatch):
    """The discriminator as run on CPU (conv_as_matmul) against XLA's convolutions (as on
    GPU/TPU): same logits and parameter gradients, in training mode."""
    images = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1), minval=-1.0, maxval=1.0)
    variables = Discriminator().init(jax.random.key(1), images, train=False)

    def logits_and_grads(matmuls: bool):
        monkeypatch.setattr(dcgan_model, "_matmul_convolutions", lambda: matmuls)

        def loss(params):
            logits, _ = Discriminator().apply(
                {**variables, "params": params},
                images,
                train=True,
                rngs={"dropout": jax.random.key(2)},
                mutable=["batch_stats"],
            )
            return jnp.sum(logits**2), logits

        return jax.value_and_grad(loss, has_aux=True)(variables["params"])

    (_, got_logits), got_grads = logits_and_grads(True)
    (_, want_logits), want_grads = logits_and_grads(False)
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grads))
    chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-4, atol=1e-5 * scale)


def test_on_cpu_only_the_generator_forward_runs_xla_convolutions():
    """What the restatements are for: on this (CPU) backend a training pass of the generator
    runs XLA convolutions only for its eight forward parity convolutions (2x2 kernels, once
    each), none for gradients or its last layer, and the discriminator none at all. Fails if
    a layer falls back to XLA's convolutions here."""
    assert jax.default_backend() == "cpu"
    z, images = jnp.zeros((4, 100)), jnp.zeros((4, 28, 28, 1))
    g = Generator().init(jax.random.key(0), z, train=False)
    d = Discriminator().init(jax.random.key(0), images, train=False)

    def g_loss(params):
        out, _ = Generator().apply({**g, "params": params}, z, train=True, mutable=["batch_stats"])
        return out.sum()

    def d_loss(params):
        out, _ = Discriminator().apply(
            {**d, "params": params},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(1)},
        )
        return out.sum()

    def convolutions(loss, params):
        found = flops.products(jax.grad(loss), params)
        return [p for p in found if p.primitive.name == "conv_general_dilated"]

    g_convs = convolutions(g_loss, g["params"])
    assert (
        sorted(p.operands[1].shape for p in g_convs)
        == [(2, 2, 128, 64)] * 4 + [(2, 2, 128, 128)] * 4
    )
    assert all(p.times == 1 for p in g_convs)
    assert convolutions(d_loss, d["params"]) == []


class _KerasLayerForLayerGenerator(nn.Module):
    """Keras-GAN's generator written literally: UpSampling2D then Conv2D."""

    @nn.compact
    def __call__(self, z, train):
        def bn(x):
            return nn.BatchNorm(
                use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON
            )(x)

        x = nn.relu(nn.Dense(128 * 7 * 7)(z)).reshape(z.shape[0], 7, 7, 128)
        x = nn.relu(bn(nn.Conv(128, (3, 3), padding="SAME")(upsample2(x))))
        x = nn.relu(bn(nn.Conv(64, (3, 3), padding="SAME")(upsample2(x))))
        return jnp.tanh(nn.Conv(1, (3, 3), padding="SAME")(x))


def test_generator_equals_the_literal_keras_layers():
    """Same initial parameters (names, shapes, values: checkpoints keep their layout), same
    images, same batch statistics and gradients as the literal layer list."""
    z = jax.random.normal(jax.random.key(3), (4, 100))
    ours = Generator().init(jax.random.key(0), z, train=False)
    literal = _KerasLayerForLayerGenerator().init(jax.random.key(0), z, train=False)
    chex.assert_trees_all_equal(ours, literal)

    def loss(module, params):
        variables = {"params": params, "batch_stats": ours["batch_stats"]}
        images, updates = module.apply(variables, z, train=True, mutable=["batch_stats"])
        return jnp.sum(images**2), (images, updates)

    (_, (images, stats)), grads = jax.value_and_grad(lambda p: loss(Generator(), p), has_aux=True)(
        ours["params"]
    )
    (_, (want_images, want_stats)), want_grads = jax.value_and_grad(
        lambda p: loss(_KerasLayerForLayerGenerator(), p), has_aux=True
    )(ours["params"])
    chex.assert_trees_all_close(images, want_images, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(stats, want_stats, rtol=1e-5, atol=1e-5)
    # Summed taps round differently: every gradient entry within 1e-4 of the largest. (The
    # convolution biases before BatchNorm have a true gradient of 0: rounding noise only.)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grads))
    chex.assert_trees_all_close(grads, want_grads, rtol=1e-4, atol=1e-4 * scale)
