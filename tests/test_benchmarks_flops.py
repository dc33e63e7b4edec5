"""The benchmark's FLOP count: the multiply-adds of a function's matmuls and convolutions."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import flops


def test_flop_count_of_dense_and_strided_convolution_training():
    x = jnp.zeros((8, 28, 28, 3))
    conv = nn.Conv(16, (3, 3), strides=(2, 2))
    params = conv.init(jax.random.key(0), x)
    forward = flops.count(conv.apply, params, x)
    assert forward == 2 * 8 * (14 * 14) * 16 * (3 * 3 * 3)
    # The weight and input gradients cost one forward each (the input gradient, a
    # transposed convolution, without its multiplications by inserted zeros).
    both = jax.grad(lambda p, x: conv.apply(p, x).sum(), argnums=(0, 1))
    assert flops.count(both, params, x) == 3 * forward
    dense = nn.Dense(5)
    params = dense.init(jax.random.key(0), jnp.zeros((4, 7)))
    assert flops.count(dense.apply, params, jnp.zeros((4, 7))) == 2 * 4 * 7 * 5


def test_flops_inside_a_scan_count_once_per_iteration():
    def repeated(x):
        return jax.lax.scan(lambda c, _: (c @ c, None), x, None, length=3)[0]

    assert flops.count(repeated, jnp.zeros((4, 4))) == 3 * 2 * 4 * 4 * 4


def test_products_are_the_distinct_matmuls_and_convolutions_with_their_counts():
    x = jax.random.normal(jax.random.key(1), (8, 12, 12, 3))
    conv = nn.Conv(16, (3, 3), strides=(2, 2), use_bias=False)
    params = conv.init(jax.random.key(0), x)
    both = jax.grad(lambda p, x: conv.apply(p, x).sum(), argnums=(0, 1))
    found = flops.products(both, params, x)
    # Forward, kernel gradient, input gradient: three different convolutions, once each.
    assert sorted(p.primitive.name for p in found) == ["conv_general_dilated"] * 3
    assert sum(p.flops * p.times for p in found) == flops.count(both, params, x)
    # A product runs again on other operands of its shapes: the forward is the layer.
    (forward,) = [p for p in found if p.operands[0].shape == x.shape and p.times == 1][:1]
    kernel = params["params"]["kernel"]
    np.testing.assert_allclose(forward.run(x, kernel), conv.apply(params, x), rtol=1e-5)
    assert "conv_general_dilated (8, 12, 12, 3)" in forward.describe()

    def repeated(a, b):  # The same matmul three times in a scan and twice outside: one entry.
        y = jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=3)[0]
        return (y @ b) @ b

    (matmul,) = flops.products(repeated, jnp.ones((4, 4)), jnp.ones((4, 4)))
    assert matmul.times == 5 and matmul.flops == 2 * 4 * 4 * 4
