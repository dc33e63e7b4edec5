"""An analytic FLOP count of a JAX function: the multiply-adds of its matmuls and convolutions.

Counted from the function's jaxpr, so it follows the model as written (a wider layer, an
extra convolution) and includes exactly the backward products JAX emits: 2 FLOPs per
multiply-add of every dot_general and conv_general_dilated, elementwise work left out (it
is a few percent of these models' work and not what a matmul peak is measured in). A
transposed convolution (the input gradient of a strided one, expressed with lhs_dilation)
is counted without the multiplications by the inserted zeros, so a convolution's backward
costs what its forward does per product, as in the usual "training = 3x forward" rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex_core


def _dot_flops(eqn) -> int:
    lhs = eqn.invars[0].aval.shape
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval.shape
    return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> int:
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
    in_features = rhs[spec[1]]
    window = math.prod(rhs[d] for d in spec[2:])
    out = eqn.outvars[0].aval.shape
    zeros = math.prod(eqn.params.get("lhs_dilation") or (1,))
    return 2 * math.prod(out) * window * in_features // zeros


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex_core.Jaxpr):
                yield item


def _count(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":  # One branch runs: count the costliest.
            total += max(_count(b.jaxpr) for b in eqn.params["branches"])
        else:
            # A scan body runs `length` times; other nested jaxprs (jit, remat, custom
            # derivatives, a while body of unknown trip count: once) once.
            inner = sum(_count(sub) for sub in _sub_jaxprs(eqn))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def count(fn: Callable, *args: Any, **kwargs: Any) -> int:
    """FLOPs of the matmuls and convolutions of one call fn(*args, **kwargs)."""
    return _count(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
