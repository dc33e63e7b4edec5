"""The DCGAN's state and its Keras-GAN training iteration, jitted, with explicit keys."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from genjax import sharding
from genjax.models.dcgan import Discriminator, Generator

PIXEL_RANGE = (-1.0, 1.0)  # The generator ends in tanh.
EVAL_OUTPUTS = ()  # No per-example output is plotted.


class BNTrainState(train_state.TrainState):
    """A network's parameters, Adam state and BatchNorm statistics."""

    batch_stats: Any = None


@flax.struct.dataclass
class GANState:
    step: jax.Array  # Iterations done: one discriminator pair and one generator update each.
    generator: BNTrainState
    discriminator: BNTrainState


def _adam(learning_rate: float, beta1: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate, b1=beta1)


def network_state(module, variables, tx: optax.GradientTransformation) -> BNTrainState:
    """One network's parameters, optimizer state and BatchNorm statistics ({} without BN)."""
    state = BNTrainState.create(
        apply_fn=module.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
    )
    # A strong int32 step, or the second call compiles the iteration again.
    return state.replace(step=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_variables(generator: Generator, discriminator: Discriminator, key: jax.Array):
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, generator.latent_dim), jnp.float32)
    x = jnp.zeros((1, 28, 28, generator.channels), jnp.float32)
    return generator.init(g_key, z, train=False), discriminator.init(d_key, x, train=False)


def create_state(
    generator: Generator,
    discriminator: Discriminator,
    learning_rate: float,
    beta1: float,
    key: jax.Array,
) -> GANState:
    """Both networks with Adam(learning_rate, beta1), as Keras-GAN (2e-4, 0.5)."""
    g_vars, d_vars = _init_variables(generator, discriminator, key)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        generator=network_state(generator, g_vars, _adam(learning_rate, beta1)),
        discriminator=network_state(discriminator, d_vars, _adam(learning_rate, beta1)),
    )


def _bce(logits: jax.Array, label: float) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label))


def _accuracy(logits: jax.Array, label: float) -> jax.Array:
    # Keras's binary accuracy: P(real) > 0.5, i.e. logit > 0.
    return jnp.mean(((logits > 0) == (label > 0.5)).astype(jnp.float32))


def _discriminator_update(d: BNTrainState, images: jax.Array, label: float, key: jax.Array):
    """One Keras `discriminator.train_on_batch`: training-mode BN and dropout, stats updated."""

    def loss_fn(params):
        logits, updates = d.apply_fn(
            {"params": params, "batch_stats": d.batch_stats},
            images,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        return jnp.mean(_bce(logits, label)), (logits, updates["batch_stats"])

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d.params)
    d = d.apply_gradients(grads=grads).replace(batch_stats=stats)
    return d, loss, logits


def latent_dim(state: GANState) -> int:
    """The generator's input size (static: read from its first layer's shape)."""
    return state.generator.params["Dense_0"]["kernel"].shape[0]


def draws(state: GANState, batch, key):
    """The iteration's noise and keys, from the key folded with the step: (real, z, keys)."""
    key = jax.random.fold_in(key, state.step)
    noise_key, real_key, fake_key, g_drop_key = jax.random.split(key, 4)
    real = batch["image"]
    z = jax.random.normal(noise_key, (real.shape[0], latent_dim(state)))
    z = sharding.constrain_batch(z)  # Each device its slice, as of the real batch.
    return real, z, (real_key, fake_key, g_drop_key)


def discriminator_phase(state: GANState, real, z, real_key, fake_key):
    """Keras-GAN's two discriminator updates: real batch (label 1), generated (label 0)."""
    g, d = state.generator, state.discriminator
    # Keras-GAN draws the fakes with generator.predict: inference mode, moving BN stats.
    fake = g.apply_fn({"params": g.params, "batch_stats": g.batch_stats}, z, train=False)
    d, d_loss_real, logits_real = _discriminator_update(d, real, 1.0, real_key)
    d, d_loss_fake, logits_fake = _discriminator_update(d, fake, 0.0, fake_key)
    metrics = {
        "discriminator_loss": 0.5 * (d_loss_real + d_loss_fake),
        "discriminator_accuracy": 50.0
        * (_accuracy(logits_real, 1.0) + _accuracy(logits_fake, 0.0)),
        "d_real": jnp.mean(jax.nn.sigmoid(logits_real)),
        "d_fake": jnp.mean(jax.nn.sigmoid(logits_fake)),
    }
    return state.replace(discriminator=d), metrics


def generator_phase(state: GANState, z, dropout_key):
    """Keras-GAN's combined update: the generator through a frozen discriminator (label 1)."""
    g, d = state.generator, state.discriminator

    def loss_fn(params):
        generated, g_updates = g.apply_fn(
            {"params": params, "batch_stats": g.batch_stats},
            z,  # The same noise, as Keras-GAN's combined.train_on_batch(noise, valid).
            train=True,
            mutable=["batch_stats"],
        )
        # The discriminator runs in training mode, as in the original Keras 2 code, where
        # `discriminator.trainable = False` froze its weights but not BatchNorm's mode (TF2
        # Keras switched that to inference mode, and the TF2 port of Keras-GAN stopped
        # converging). Its statistics from this pass are thrown away and no gradient
        # reaches its parameters, so both stay exactly as they were.
        logits, _ = d.apply_fn(
            {"params": d.params, "batch_stats": d.batch_stats},
            generated,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        return jnp.mean(_bce(logits, 1.0)), g_updates["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
    g = g.apply_gradients(grads=grads).replace(batch_stats=stats)
    return state.replace(generator=g), {"generator_loss": loss}


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: GANState, batch, key):
    """One Keras-GAN iteration on a batch of real images: D on them, D on as many generated
    ones, then G; (state, metrics)."""
    real, z, (real_key, fake_key, g_drop_key) = draws(state, batch, key)
    state, d_metrics = discriminator_phase(state, real, z, real_key, fake_key)
    state, g_metrics = generator_phase(state, z, g_drop_key)
    return state.replace(step=state.step + 1), {**d_metrics, **g_metrics}


@jax.jit
def eval_step(state: GANState, batch, key):
    """The discriminator on held-out real images and as many generated ones (inference
    mode), per example [B]: its probability of "real" for each, and whether it is right."""
    d = state.discriminator
    z = jax.random.normal(key, (batch["image"].shape[0], latent_dim(state)))
    fake = generate(state, sharding.constrain_batch(z))
    variables = {"params": d.params, "batch_stats": d.batch_stats}
    logits_real = d.apply_fn(variables, batch["image"], train=False)
    logits_fake = d.apply_fn(variables, fake, train=False)
    return {
        "d_real": jax.nn.sigmoid(logits_real),
        "d_fake": jax.nn.sigmoid(logits_fake),
        "discriminator_accuracy": 50.0
        * ((logits_real > 0).astype(jnp.float32) + (logits_fake <= 0).astype(jnp.float32)),
    }


@jax.jit
def generate(state: GANState, z: jax.Array) -> jax.Array:
    """Images in [-1, 1] from noise z, with the generator's moving BN statistics."""
    g = state.generator
    return g.apply_fn({"params": g.params, "batch_stats": g.batch_stats}, z, train=False)
