"""Timing loops shared by every framework's cases, and this machine's matmul ceiling."""

from __future__ import annotations

import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def peak_rss_mb() -> float:
    """The process's peak resident memory in MB."""
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def timed(call, seconds: float, warmup: int = 1, min_calls: int = 2) -> tuple[float, float, int]:
    """(seconds of the first `warmup` calls, steady seconds per call, steady calls): calls
    repeated for `seconds`, at least `min_calls` times. Every framework's cases use it."""
    start = time.perf_counter()
    for _ in range(warmup):
        call()
    first = time.perf_counter() - start
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return first, (time.perf_counter() - start) / calls, calls


def _best_gflops(product, n: int, seconds: float) -> float:
    """The fastest of short bursts of n x n x n products: a ceiling, so the best is kept."""
    product()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        start, calls = time.perf_counter(), 0
        while calls < 2 or time.perf_counter() - start < 0.25:
            product()
            calls += 1
        best = max(best, 2 * n**3 * calls / (time.perf_counter() - start) / 1e9)
    return best


def matmul_peak(n: int, seconds: float = 3.0) -> dict[str, float]:
    """This machine's float32 matmul ceiling in GFLOP/s: an n x n x n product by XLA (jitted)
    and by NumPy's BLAS; `matmul_gflops` is the faster, the ceiling genjax is held to."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    product = jax.jit(jnp.dot)
    xla = _best_gflops(lambda: product(a, b).block_until_ready(), n, seconds)
    a_host, b_host = np.asarray(a), np.asarray(b)
    blas = _best_gflops(lambda: a_host @ b_host, n, seconds)
    return {"xla_gflops": xla, "numpy_gflops": blas, "matmul_gflops": max(xla, blas)}
