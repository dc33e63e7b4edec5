"""--floor: each matmul and convolution of a training step, and its optimizer update, timed
alone beside the step: how much of the step is kernels that any framework on this machine
runs, and how much is the rest (elementwise work, data gathering, dispatch)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks import flops
from benchmarks.timing import timed

# Runs of a product per timed call: a chain, each run's input changed by the previous run's
# output, so that nothing can be hoisted, cached or run concurrently.
_CHAIN = 16


def chained(run, carried: jax.Array, rest: tuple, seconds: float) -> float:
    """Seconds per run of run(carried, *rest) in a jitted chain of _CHAIN runs. One element
    of `carried` is set from the last run's output sum, so the chain adds one pass reading
    each output (a few percent of a matmul's time) and nothing else."""

    def body(carry, _):
        x, feed = carry
        x = x.at[(0,) * x.ndim].set(jnp.tanh(feed).astype(x.dtype))
        out = run(x, *rest)
        return (x, sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))), None

    chain = jax.jit(lambda x, rest: jax.lax.scan(body, (x, 0.0), length=_CHAIN)[0][1])
    _, per_call, _ = timed(lambda: chain(carried, rest).block_until_ready(), seconds)
    return per_call / _CHAIN


def channels_last(product: flops.Product, operands: list[jax.Array]):
    """A convolution restated on operands transposed to NHWC / HWIO (out NHWC): the same
    products. Inside a step XLA lays out a convolution's operands as its kernels want them
    (the producers write that layout); alone, arrays arrive row-major, and a convolution
    whose dimension numbers don't match that (a kernel gradient: batch as the contracted
    feature) was measured at 1 to 190 ms from run to run for a product that takes 1 ms
    restated."""
    lhs, rhs, out = product.params["dimension_numbers"]
    n = len(lhs)
    lhs_order = (lhs[0], *lhs[2:], lhs[1])
    rhs_order = (*rhs[2:], rhs[1], rhs[0])
    nhwc, hwio = (0, n - 1, *range(1, n - 1)), (n - 1, n - 2, *range(n - 2))
    dimension_numbers = jax.lax.ConvDimensionNumbers(nhwc, hwio, nhwc)
    params = {**product.params, "dimension_numbers": dimension_numbers}
    run = functools.partial(product.primitive.bind, **params)
    return run, [operands[0].transpose(lhs_order), operands[1].transpose(rhs_order)]


def product_seconds(product: flops.Product, seconds: float) -> float:
    """Seconds one run of a step's matmul or convolution takes alone on this device: the
    same primitive, shapes and parameters, random operands (a convolution's in the layout
    its kernels want, as inside a step; see channels_last)."""
    keys = jax.random.split(jax.random.key(0), len(product.operands))
    operands = [
        jax.random.normal(k, o.shape, o.dtype) for k, o in zip(keys, product.operands, strict=True)
    ]
    run = product.run
    if product.primitive.name == "conv_general_dilated":
        run, operands = channels_last(product, operands)
    return chained(run, operands[0], tuple(operands[1:]), seconds)


def optimizer_seconds(state, seconds: float) -> float:
    """Seconds of one state.apply_gradients alone (the optimizer's update of every
    parameter), with fixed gradients of the parameters' shapes, the state carried from one
    update to the next as in the training loop."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), state.params)

    def updates(state, grads):
        step = lambda s, _: (s.apply_gradients(grads=grads), None)  # noqa: E731
        return jax.lax.scan(step, state, length=_CHAIN)[0]

    chain = jax.jit(updates, donate_argnums=0)
    box = {"state": jax.tree.map(jnp.copy, state)}

    def call():
        box["state"] = chain(box["state"], grads)
        jax.block_until_ready(box["state"])

    _, per_call, _ = timed(call, seconds)
    return per_call / _CHAIN


def floor(row: dict, step_products: list[flops.Product], state, seconds: float) -> dict:
    """The step beside its parts timed alone (--floor); milliseconds per training step."""
    each = max(seconds / (len(step_products) + 1), 0.05)
    times = [product_seconds(p, each) * p.times for p in step_products]
    optimizer = optimizer_seconds(state, each) if state is not None else None
    step = 1e3 / row["steps_per_s"]
    kernels = 1e3 * sum(times)
    parts = kernels + (1e3 * optimizer if optimizer is not None else 0.0)
    return {
        "step_ms": step,
        "products_ms": kernels,
        "products_gflops": row["gflop_per_step"] / kernels * 1e3,
        "optimizer_ms": None if optimizer is None else 1e3 * optimizer,
        "rest_ms": step - parts,
        "products": [
            {"product": p.describe(), "times": p.times, "ms": 1e3 * t}
            for p, t in zip(step_products, times, strict=True)
        ],
    }
