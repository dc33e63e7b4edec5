"""An analytic FLOP count of a JAX function: the multiply-adds of its matmuls and convolutions.

Counted from the function's jaxpr, so it follows the model as written (a wider layer, an
extra convolution) and includes exactly the backward products JAX emits: 2 FLOPs per
multiply-add of every dot_general and conv_general_dilated, elementwise work left out (it
is a few percent of these models' work and not what a matmul peak is measured in). A
transposed convolution (the input gradient of a strided one, expressed with lhs_dilation)
is counted without the multiplications by the inserted zeros, so a convolution's backward
costs what its forward does per product, as in the usual "training = 3x forward" rule.
`products` lists the same matmuls and convolutions, each distinct one once with how often it
runs, so that each can be run again alone (the benchmark's --floor).
"""

from __future__ import annotations

import dataclasses
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


_FLOPS = {"dot_general": _dot_flops, "conv_general_dilated": _conv_flops}


def _walk(jaxpr, times: int = 1):
    """(equation, runs per call) of every matmul and convolution, nested jaxprs included."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _FLOPS:
            yield eqn, times
        elif name == "cond":  # One branch runs: count the costliest.
            costliest = max(eqn.params["branches"], key=lambda b: _count(b.jaxpr))
            yield from _walk(costliest.jaxpr, times)
        else:
            # A scan body runs `length` times; other nested jaxprs (jit, remat, custom
            # derivatives, a while body of unknown trip count: once) once.
            inner = times * (eqn.params["length"] if name == "scan" else 1)
            for sub in _sub_jaxprs(eqn):
                yield from _walk(sub, inner)


def _count(jaxpr) -> int:
    return sum(_FLOPS[eqn.primitive.name](eqn) * times for eqn, times in _walk(jaxpr))


def count(fn: Callable, *args: Any, **kwargs: Any) -> int:
    """FLOPs of the matmuls and convolutions of one call fn(*args, **kwargs)."""
    return _count(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


@dataclasses.dataclass(frozen=True)
class Product:
    """One distinct matmul or convolution of a function, as its jaxpr states it."""

    primitive: Any  # jax's dot_general or conv_general_dilated primitive.
    params: dict[str, Any]  # Its equation's parameters (dimension numbers, strides, ...).
    operands: tuple[jax.ShapeDtypeStruct, ...]
    flops: int  # Per run.
    times: int  # Runs per call of the function.

    def run(self, *operands: jax.Array) -> jax.Array:
        """The same product of other operands of these shapes."""
        return self.primitive.bind(*operands, **self.params)

    def describe(self) -> str:
        shapes = " x ".join(str(tuple(o.shape)) for o in self.operands)
        return f"{self.primitive.name} {shapes}"


def products(fn: Callable, *args: Any, **kwargs: Any) -> list[Product]:
    """The distinct matmuls and convolutions of one call fn(*args, **kwargs), each with how
    often it runs; sum(p.flops * p.times) == count(fn, ...)."""
    found: dict[str, Product] = {}
    for eqn, times in _walk(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr):
        operands = tuple(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
        key = repr((eqn.primitive.name, operands, sorted(eqn.params.items())))
        if key in found:
            found[key] = dataclasses.replace(found[key], times=found[key].times + times)
        else:
            flops = _FLOPS[eqn.primitive.name](eqn)
            found[key] = Product(eqn.primitive, dict(eqn.params), operands, flops, times)
    return list(found.values())
