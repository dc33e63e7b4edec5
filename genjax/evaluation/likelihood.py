"""The importance-weighted bound on log p(x) (Burda et al., 2015) and the k-sample ELBO.

    log p(x) >= IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)],  z_i ~ q(z | x)

IWAE_1 is the ELBO; IWAE_k grows with k towards log p(x). Samples are drawn in chunks and
combined with a running log-sum-exp, so memory is bounded by the chunk, not by k.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from genjax import losses

# encode(x) -> (mean, log_var) of q(z | x); log_likelihood(x, z) -> log p(x | z), both [B].
Encoder = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
LogLikelihood = Callable[[jax.Array, jax.Array], jax.Array]


def iwae_bound(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    log_likelihood: LogLikelihood,
    num_samples: int,
    chunk_size: int,
) -> dict[str, jax.Array]:
    """Per-example {"iwae": IWAE_k bound, "elbo": mean log weight}, k = num_samples. [B] each.

    The prior is N(0, I). `num_samples` must be a multiple of `chunk_size`.
    """
    if num_samples % chunk_size:
        raise ValueError(f"num_samples={num_samples} is not a multiple of chunk={chunk_size}")
    mean, log_var = encode(x)
    std = jnp.exp(0.5 * log_var)

    def log_weights(key):
        z = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
        log_prior = losses.gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
        log_q = losses.gaussian_log_density(z, mean, log_var)
        return log_likelihood(x, z) + log_prior - log_q  # [B]

    def body(carry, chunk_key):
        lse, total = carry
        w = jax.vmap(log_weights)(jax.random.split(chunk_key, chunk_size))  # [chunk, B]
        return (jnp.logaddexp(lse, jax.nn.logsumexp(w, axis=0)), total + w.sum(0)), None

    start = (jnp.full(mean.shape[0], -jnp.inf), jnp.zeros(mean.shape[0]))
    keys = jax.random.split(key, num_samples // chunk_size)
    (lse, total), _ = jax.lax.scan(body, start, keys)
    return {"iwae": lse - jnp.log(num_samples), "elbo": total / num_samples}


@functools.partial(jax.jit, static_argnames=("num_samples", "chunk_size", "batch_size"))
def vae_test_bounds(state, images, key, *, num_samples: int, chunk_size: int, batch_size: int):
    """Mean IWAE_k and k-sample ELBO (nats) of a Bernoulli VAE over images in [0, 1] / {0, 1}.

    Evaluated in batches of `batch_size` examples (padded and masked), so memory is bounded
    by batch_size * chunk_size decoder passes.
    """
    n = images.shape[0]
    num_batches = -(-n // batch_size)

    def encode(x):
        return state.apply_fn({"params": state.params}, x, method="encode")

    def log_likelihood(x, z):
        logits = state.apply_fn({"params": state.params}, z, method="decode_logits")
        return -losses.bernoulli_nll(x, logits)

    def body(totals, i):
        idx = i * batch_size + jnp.arange(batch_size)
        mask = (idx < n).astype(jnp.float32)
        x = images[jnp.minimum(idx, n - 1)]
        bounds = iwae_bound(
            jax.random.fold_in(key, i), x, encode, log_likelihood, num_samples, chunk_size
        )
        return {k: totals[k] + jnp.sum(v * mask) for k, v in bounds.items()}, None

    zeros = {"iwae": jnp.zeros(()), "elbo": jnp.zeros(())}
    totals, _ = jax.lax.scan(body, zeros, jnp.arange(num_batches))
    return {k: v / n for k, v in totals.items()}
