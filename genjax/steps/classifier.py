"""The feature network's state, jitted train/eval steps and its feature function."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from genjax.models.classifier import Classifier
from genjax.steps.state import TrainState, adam
from genjax.steps.state import create as create_train_state

PIXEL_RANGE = (0.0, 1.0)
# The per-example output of eval_step that the feature-space pictures plot.
EVAL_OUTPUTS = ("features",)


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_params(model: Classifier, key: jax.Array, image_shape=(28, 28, 1)):
    return model.init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]


def create_state(model: Classifier, learning_rate: float, image_shape, key) -> TrainState:
    """Initial parameters and Adam state; the module and optimizer are bound here, once."""
    params = init_params(model, key, tuple(image_shape))
    return create_train_state(model.apply, params, adam(learning_rate))


def _scores(logits, labels):
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return loss, correct


def _per_example(params, state, batch):
    return _scores(state.apply_fn({"params": params}, batch["image"]), batch["label"])


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state, batch, key):
    """One Adam step on the batch's mean cross-entropy; the key is unused (no dropout)."""
    del key

    def loss_fn(params):
        loss, correct = _per_example(params, state, batch)
        return jnp.mean(loss), jnp.mean(correct)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}


@jax.jit
def eval_step(state, batch, key):
    """Per-example cross-entropy and correctness, [B] each, and the penultimate features
    [B, 128] (EVAL_OUTPUTS)."""
    del key
    feats, logits = state.apply_fn(
        {"params": state.params}, batch["image"], method="features_and_logits"
    )
    loss, correct = _scores(logits, batch["label"])
    return {"loss": loss, "accuracy": correct, "features": feats}


@jax.jit
def features(state, images):
    """Images [B, 28, 28, C] in [0, 1] -> penultimate-layer features [B, 128]."""
    return state.apply_fn({"params": state.params}, images, method="features")


@jax.jit
def features_and_logits(state, images):
    """Images [B, 28, 28, C] in [0, 1] -> (features [B, 128], class logits [B, classes])."""
    return state.apply_fn({"params": state.params}, images, method="features_and_logits")
