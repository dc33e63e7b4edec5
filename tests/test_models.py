import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models.autoencoder import Autoencoder


def _params(model, key=0):
    return jax.jit(model.init)(jax.random.key(key), jnp.zeros((1, 28, 28, 1)))["params"]


def _count(params):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "latent_dim, expected",
    # 784*512+512 + 512*L+L + L*512+512 + 512*784+784, as Keras's model.summary() counts them.
    [(2, 806_674), (10, 814_874), (100, 907_124)],
)
def test_parameter_counts_are_pinned(latent_dim, expected):
    model = Autoencoder(latent_dim=latent_dim)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert _count(shapes["params"]) == expected


def test_shapes_and_ranges():
    model = Autoencoder(latent_dim=3)
    params = _params(model)
    x = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
    z = model.apply({"params": params}, x, method="encode")
    x_hat = model.apply({"params": params}, x)
    chex.assert_shape(z, (5, 3))
    chex.assert_shape(x_hat, (5, 28, 28, 1))
    chex.assert_tree_all_finite((z, x_hat))
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0  # sigmoid output
    chex.assert_shape(params["encoder_hidden"]["kernel"], (784, 512))
    chex.assert_shape(params["decoder_output"]["kernel"], (512, 784))


def test_latent_activation_is_configurable():
    x = jax.random.uniform(jax.random.key(2), (256, 28, 28, 1))
    leaky = Autoencoder(latent_dim=8)
    params = _params(leaky)
    z_pre = Autoencoder(latent_dim=8, latent_activation="linear").apply(
        {"params": params}, x, method="encode"
    )
    z_leaky = leaky.apply({"params": params}, x, method="encode")
    z_relu = Autoencoder(latent_dim=8, latent_activation="relu").apply(
        {"params": params}, x, method="encode"
    )
    assert float(z_pre.min()) < 0  # Some pre-activations are negative, so the test bites.
    chex.assert_trees_all_close(z_leaky, jnp.where(z_pre > 0, z_pre, 0.3 * z_pre), rtol=1e-6)
    chex.assert_trees_all_close(z_relu, jnp.maximum(z_pre, 0.0), rtol=1e-6)
