"""The autoencoder's state, jitted train/eval steps and its sampling functions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from genjax import losses
from genjax.models.autoencoder import Autoencoder
from genjax.steps.state import TrainState, adam
from genjax.steps.state import create as create_train_state

PIXEL_RANGE = (0.0, 1.0)  # The decoder ends in a sigmoid.
# The per-example output of eval_step that the latent-space pictures plot.
EVAL_OUTPUTS = ("z",)


@functools.partial(jax.jit, static_argnums=0)
def init_params(model: Autoencoder, key: jax.Array):
    """The model's initial parameters; jitted once per model shape, not run op by op."""
    return model.init(key, jnp.zeros((1, *model.image_shape), jnp.float32))["params"]


def create_state(model: Autoencoder, learning_rate: float, key: jax.Array) -> TrainState:
    """Initial parameters and Adam state; the module and optimizer are bound here, once."""
    return create_train_state(model.apply, init_params(model, key), adam(learning_rate))


def _loss(params, state, batch):
    x = batch["image"]
    x_hat = state.apply_fn({"params": params}, x)
    return jnp.mean(losses.mean_squared_error(x, x_hat))


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state, batch, key):
    """One Adam step on the batch's mean squared error: (state, batch, key) -> (state, metrics).

    The autoencoder draws no random numbers; the key keeps every family's step signature
    the same (it would be folded with state.step, as the VAE's is).
    """
    del key
    loss, grads = jax.value_and_grad(_loss)(state.params, state, batch)
    return state.apply_gradients(grads=grads), {"loss": loss}


@jax.jit
def eval_step(state, batch, key):
    """Per-example loss [B] and latent code z [B, latent_dim] (EVAL_OUTPUTS)."""
    del key
    variables = {"params": state.params}
    z = state.apply_fn(variables, batch["image"], method="encode")
    x_hat = state.apply_fn(variables, z, method="decode")
    return {"loss": losses.mean_squared_error(batch["image"], x_hat), "z": z}


@jax.jit
def reconstruction_errors(state, batch, key):
    """Per-example test figures, [B] each: mean squared error per pixel (in [0, 1]) and
    PSNR in dB (peak 1), the number image-compression papers compare."""
    del key
    x = batch["image"]
    mse = losses.mean_squared_error(x, state.apply_fn({"params": state.params}, x))
    return {"recon_mse": mse, "recon_psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))}


@jax.jit
def reconstruct(state, images):
    """[B, 28, 28, 1] in [0, 1] -> reconstructions."""
    return state.apply_fn({"params": state.params}, images)


@jax.jit
def encode(state, images):
    """[B, 28, 28, 1] in [0, 1] -> latent codes [B, latent_dim]."""
    return state.apply_fn({"params": state.params}, images, method="encode")


@jax.jit
def codes(state, batch, key):
    """An eval_step with no figures: the codes z [B, latent_dim], which fused.evaluate keeps
    whole when named in its outputs (the training split's, for a Gaussian over them)."""
    del key
    return {"z": state.apply_fn({"params": state.params}, batch["image"], method="encode")}


@functools.partial(jax.jit, static_argnames="num")
def generate(state, mean, scale, key, num: int):
    """`num` images decoded from z = mean + scale @ eps, eps ~ N(0, I) drawn with `key`:
    scale @ scale.T is the Gaussian's covariance ([latent_dim, latent_dim])."""
    eps = jax.random.normal(key, (num, mean.shape[0]))
    return state.apply_fn({"params": state.params}, mean + eps @ scale.T, method="decode")
