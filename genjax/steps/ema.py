"""A train state with an exponential moving average of its parameters, shared by the
diffusion and flow-matching steps (both train one network and sample with the average)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

# The U-Net families' training step on XLA:CPU: YNNPACK library fusions for reductions only
# (the group norms'); XLA's own emitters run the convolutions and their gradients, faster
# than YNNPACK's here (measured: docs/performance.md). Read by the iteration loop, on CPU.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
CLIP_NORM = 1.0  # Gradients clipped to this global norm: guards the first steps' spikes.
# The average's warm-up, min(decay, (1 + n) / (WARMUP + n)) after n updates: early pictures
# show the trained weights, not a mix dominated by the random initialisation.
WARMUP = 10


class EMAState(train_state.TrainState):
    """Parameters, Adam state and the parameters' moving average (what samples use)."""

    ema_params: Any = None
    ema_decay: float = struct.field(pytree_node=False, default=0.999)  # Its most decay.


def optimizer(learning_rate: float) -> optax.GradientTransformation:
    """Adam(learning_rate) after clipping the gradients' global norm to CLIP_NORM."""
    return optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.adam(learning_rate))


@functools.partial(jax.jit, static_argnums=0)
def _init(model, key: jax.Array):
    x = jnp.zeros((1, 28, 28, 1), jnp.float32)
    return model.init(key, x, jnp.zeros((1,), jnp.float32))["params"]


def create(model, learning_rate: float, ema_decay: float, key: jax.Array, cls=EMAState, **static):
    """A `cls` state of a (x, t) model: fresh parameters, their copy as the average, a
    strongly typed int32 step; `static`: the settings `cls` declares as static fields."""
    params = _init(model, key)
    state = cls.create(
        apply_fn=model.apply,
        params=params,
        tx=optimizer(learning_rate),
        ema_params=jax.tree.map(jnp.copy, params),
        ema_decay=ema_decay,
        **static,
    )
    # A strong int32 step, or the second call compiles the iteration again.
    return state.replace(step=jnp.zeros((), jnp.int32))


def effective_decay(decay: float, step: jax.Array) -> jax.Array:
    """The average's decay after `step` updates: min(decay, (1 + step) / (WARMUP + step))."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (WARMUP + step))


def apply_gradients(state: EMAState, grads) -> EMAState:
    """One Adam update, then ema' = d * ema + (1 - d) * params' (d: effective_decay)."""
    state = state.apply_gradients(grads=grads)
    d = effective_decay(state.ema_decay, state.step)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema_params, state.params)
    return state.replace(ema_params=ema)


def train_step(state: EMAState, loss_fn, key: jax.Array):
    """loss_fn(params, key) -> per-example losses [B]; the mean's update: (state, metrics)."""

    def mean_loss(params):
        return jnp.mean(loss_fn(params, key))

    loss, grads = jax.value_and_grad(mean_loss)(state.params)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return apply_gradients(state, grads), metrics
