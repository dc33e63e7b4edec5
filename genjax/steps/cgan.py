"""The CGAN's state and its Keras-GAN iteration: the DCGAN's two phases on labelled pairs."""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from genjax import sharding
from genjax.models.cgan import Discriminator, Generator
from genjax.steps import dcgan

PIXEL_RANGE = dcgan.PIXEL_RANGE  # The generator ends in tanh.
EVAL_OUTPUTS = ()  # No per-example output is plotted.


@flax.struct.dataclass
class CGANState(dcgan.GANState):
    # Keras-GAN's batch_size: the generator's update takes this many noise vectors and labels,
    # while the discriminator's real batch (what the loop draws) is half of it.
    batch_size: int = flax.struct.field(pytree_node=False)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_variables(generator: Generator, discriminator: Discriminator, key: jax.Array):
    g_key, d_key = jax.random.split(key)
    labels = jnp.zeros((1,), jnp.int32)
    z = jnp.zeros((1, generator.latent_dim), jnp.float32)
    x = jnp.zeros((1, *generator.image_shape), jnp.float32)
    return (
        generator.init(g_key, (z, labels), train=False),
        discriminator.init(d_key, (x, labels), train=False),
    )


def create_state(
    generator: Generator,
    discriminator: Discriminator,
    learning_rate: float,
    beta1: float,
    batch_size: int,
    key: jax.Array,
) -> CGANState:
    """Both networks with Adam(learning_rate, beta1), as Keras-GAN (2e-4, 0.5)."""
    g_vars, d_vars = _init_variables(generator, discriminator, key)
    return CGANState(
        step=jnp.zeros((), jnp.int32),
        generator=dcgan.network_state(generator, g_vars, dcgan._adam(learning_rate, beta1)),
        discriminator=dcgan.network_state(discriminator, d_vars, dcgan._adam(learning_rate, beta1)),
        batch_size=batch_size,
    )


def latent_dim(state: CGANState) -> int:
    """The generator's noise size (static: the label embedding's width)."""
    return state.generator.params["Embed_0"]["embedding"].shape[1]


def num_classes(state: CGANState) -> int:
    """The classes the networks are conditioned on (static: the embedding's rows)."""
    return state.generator.params["Embed_0"]["embedding"].shape[0]


def draws(state: CGANState, batch, key):
    """The iteration's pairs and keys, from the key folded with the step: (real pairs,
    (noise, real labels) of the fakes, (noise, sampled labels) of the generator's update,
    dropout keys)."""
    key = jax.random.fold_in(key, state.step)
    d_noise, g_noise, g_labels, real_key, fake_key, g_drop_key = jax.random.split(key, 6)
    real = (batch["image"], batch["label"])
    z = jax.random.normal(d_noise, (real[0].shape[0], latent_dim(state)))
    g_z = jax.random.normal(g_noise, (state.batch_size, latent_dim(state)))
    sampled = jax.random.randint(g_labels, (state.batch_size,), 0, num_classes(state))
    # Each device its slice, as of the real batch.
    fake_inputs, g_inputs = sharding.constrain_batch(((z, batch["label"]), (g_z, sampled)))
    return real, fake_inputs, g_inputs, (real_key, fake_key, g_drop_key)


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: CGANState, batch, key):
    """One Keras-GAN cgan.py iteration on a half batch of labelled real images: D on them, D
    on as many generated with their labels, then G on a full batch of sampled labels."""
    real, fake_inputs, g_inputs, (real_key, fake_key, g_drop_key) = draws(state, batch, key)
    state, d_metrics = dcgan.discriminator_phase(state, real, fake_inputs, real_key, fake_key)
    state, g_metrics = dcgan.generator_phase(state, g_inputs, g_drop_key)
    return state.replace(step=state.step + 1), {**d_metrics, **g_metrics}


@jax.jit
def eval_step(state: CGANState, batch, key):
    """The discriminator on held-out labelled images and as many generated with the same
    labels (inference mode), per example [B]: P(real) for each, and whether it is right."""
    d = state.discriminator
    z = jax.random.normal(key, (batch["image"].shape[0], latent_dim(state)))
    fake = generate(state, sharding.constrain_batch(z), batch["label"])
    variables = {"params": d.params, "batch_stats": d.batch_stats}
    logits_real = d.apply_fn(variables, (batch["image"], batch["label"]), train=False)
    logits_fake = d.apply_fn(variables, (fake, batch["label"]), train=False)
    return {
        "d_real": jax.nn.sigmoid(logits_real),
        "d_fake": jax.nn.sigmoid(logits_fake),
        "discriminator_accuracy": 50.0
        * ((logits_real > 0).astype(jnp.float32) + (logits_fake <= 0).astype(jnp.float32)),
    }


@jax.jit
def generate(state: CGANState, z: jax.Array, labels: jax.Array) -> jax.Array:
    """Images in [-1, 1] of classes `labels` from noise z, with the moving BN statistics."""
    g = state.generator
    images, _ = g.apply_fn(
        {"params": g.params, "batch_stats": g.batch_stats}, (z, labels), train=False
    )
    return images
