"""Per-example losses against their closed forms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax import losses


def test_squared_errors_are_per_example_means_and_sums_over_pixels():
    x = jnp.zeros((2, 28, 28, 1))
    x_hat = x.at[0].set(0.5).at[1, 0, 0, 0].set(1.0)
    chex.assert_trees_all_close(losses.mean_squared_error(x, x_hat), jnp.array([0.25, 1 / 784]))
    chex.assert_trees_all_close(losses.sum_squared_error(x, x_hat), jnp.array([196.0, 1.0]))


def test_kl_matches_its_closed_form_and_a_monte_carlo_estimate():
    mean = jnp.array([[0.5, -1.0, 0.0]])
    log_var = jnp.array([[0.2, -0.7, 1.1]])
    kl = losses.gaussian_kl(mean, log_var)
    var = jnp.exp(log_var)
    by_hand = jnp.sum(0.5 * (var + mean**2 - 1.0 - log_var))
    np.testing.assert_allclose(kl[0], by_hand, rtol=1e-6)
    z = mean + jnp.sqrt(var) * jax.random.normal(jax.random.key(0), (400_000, 3))
    zeros = jnp.zeros_like(z)
    mc = jnp.mean(
        losses.gaussian_log_density(z, mean, log_var) - losses.gaussian_log_density(z, zeros, zeros)
    )
    np.testing.assert_allclose(mc, kl[0], rtol=0.01)


def test_bernoulli_nll_is_binary_cross_entropy_in_nats():
    x = jnp.array([[1.0, 0.0, 1.0]])
    logits = jnp.array([[2.0, -1.0, -0.5]])
    p = jax.nn.sigmoid(logits)
    by_hand = -jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p))
    np.testing.assert_allclose(losses.bernoulli_nll(x, logits)[0], by_hand, rtol=1e-6)
