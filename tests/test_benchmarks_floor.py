"""The benchmark's --floor: each product of a step, and its optimizer update, timed alone."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import floor, flops
from genjax.models.autoencoder import Autoencoder
from genjax.steps import autoencoder as steps_ae


def test_a_convolution_is_timed_channels_last_as_the_same_product():
    """--floor restates a convolution on transposed operands: it must stay the same sum of
    products (here a kernel gradient, whose contracted feature is the batch)."""
    x = jax.random.normal(jax.random.key(1), (6, 9, 9, 3))
    conv = nn.Conv(5, (3, 3), use_bias=False)
    params = conv.init(jax.random.key(0), x)
    grad = jax.grad(lambda p: conv.apply(p, x).sum())
    found = flops.products(grad, params)
    (kernel_grad,) = [p for p in found if p.operands[1].shape == (6, 9, 9, 5)]  # x and g
    operands = [
        jax.random.normal(jax.random.key(i), o.shape) for i, o in enumerate(kernel_grad.operands)
    ]
    run, restated = floor.channels_last(kernel_grad, operands)
    expected = kernel_grad.run(*operands)
    got = run(*restated)
    assert got.size == expected.size
    np.testing.assert_allclose(np.sort(got.ravel()), np.sort(expected.ravel()), rtol=1e-4)
    np.testing.assert_allclose(got.sum(), expected.sum(), rtol=1e-4)


def test_floor_times_each_product_alone_and_the_optimizer():
    found = flops.products(lambda a, b: a @ b, jnp.ones((16, 32)), jnp.ones((32, 8)))
    row = {"steps_per_s": 100.0, "gflop_per_step": 2 * 16 * 32 * 8 / 1e9}
    timed = floor.floor(row, found, None, seconds=0.05)  # No optimizer: the DCGAN's case.
    assert timed["step_ms"] == pytest.approx(10.0) and timed["optimizer_ms"] is None
    ((entry),) = timed["products"]
    assert entry["times"] == 1 and entry["ms"] > 0 and "(16, 32) x (32, 8)" in entry["product"]
    assert timed["rest_ms"] == pytest.approx(10.0 - entry["ms"])
    state = steps_ae.create_state(Autoencoder(latent_dim=2), 1e-3, jax.random.key(0))
    assert floor.optimizer_seconds(state, seconds=0.05) > 0
