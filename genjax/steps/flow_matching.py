"""Conditional flow matching with the straight (rectified-flow) path (Lipman et al. 2023; Liu
et al. 2023): the velocity loss, its training step with the weights' moving average, and the
Euler and Heun samplers.

Time runs from noise to data: x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I), x_1 an image, so the
target velocity dx_t/dt = x_1 - x_0 and sampling integrates from t = 0 to 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from genjax import sharding
from genjax.steps import ema
from genjax.steps.ema import CPU_COMPILER_OPTIONS as CPU_COMPILER_OPTIONS  # The loop's.
from genjax.steps.ema import EMAState

PIXEL_RANGE = (-1.0, 1.0)  # Data scaled to the range of the unit-variance noise.
EVAL_OUTPUTS = ()  # No per-example output is plotted.
SAMPLERS = ("euler", "heun")


def interpolate(t: jax.Array, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """The path's point at times t [B]: (1 - t) x0 + t x1."""
    t = t[:, None, None, None]
    return (1.0 - t) * x0 + t * x1


def target_velocity(x0: jax.Array, x1: jax.Array) -> jax.Array:
    """d/dt of interpolate: x1 - x0, the same at every t."""
    return x1 - x0


def velocity_loss(v_hat: jax.Array, v: jax.Array) -> jax.Array:
    """Mean squared error over pixels per example, [B]."""
    return jnp.mean(jnp.square(v_hat - v), axis=tuple(range(1, v.ndim)))


def create_state(model, learning_rate: float, ema_decay: float, key) -> EMAState:
    """The network with clipped Adam(learning_rate) and its moving average."""
    return ema.create(model, learning_rate, ema_decay, key)


def per_example_loss(state: EMAState, params, x1: jax.Array, key: jax.Array) -> jax.Array:
    """The velocity loss [B] of images x1 at t ~ U[0, 1] with noise x0, both from key."""
    t_key, noise_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (x1.shape[0],))
    x0 = jax.random.normal(noise_key, x1.shape)
    t, x0 = sharding.constrain_batch((t, x0))  # Each device its slice, as of the batch.
    v_hat = state.apply_fn({"params": params}, interpolate(t, x0, x1), t)
    return velocity_loss(v_hat, target_velocity(x0, x1))


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: EMAState, batch, key):
    """One Adam step on the velocity loss of the batch's images, then the average's update."""
    key = jax.random.fold_in(key, state.step)
    return ema.train_step(
        state, lambda params, k: per_example_loss(state, params, batch["image"], k), key
    )


@jax.jit
def eval_step(state: EMAState, batch, key):
    """The velocity loss [B] of held-out images at random times, with the averaged weights."""
    return {"loss": per_example_loss(state, state.ema_params, batch["image"], key)}


def sample(v_fn, x, *, num_steps: int, sampler: str):
    """x_0 [N, ...] (noise) -> (x_1 [N, ...], trajectory): num_steps Euler or Heun steps of
    dt = 1 / num_steps. trajectory: (x_t, its one-step estimate of x_1: x_t + (1 - t) v) of
    example 0 before each step, and x_1 after the last, [num_steps + 1, ...] each.

    v_fn(x_t, t [N]) -> velocity. Heun (the trapezoidal rule with an Euler predictor) costs
    two evaluations a step.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
    dt = 1.0 / num_steps

    def body(x, i):
        t = i * dt
        v = v_fn(x, jnp.full((x.shape[0],), t))
        x_next = x + dt * v
        if sampler == "heun":
            v_next = v_fn(x_next, jnp.full((x.shape[0],), t + dt))
            x_next = x + 0.5 * dt * (v + v_next)
        return x_next, (x[0], x[0] + (1.0 - t) * v[0])

    x, (xs, x1s) = jax.lax.scan(body, x, jnp.arange(num_steps, dtype=jnp.float32))
    trajectory = (jnp.concatenate([xs, x[None, 0]]), jnp.concatenate([x1s, x[None, 0]]))
    return x, trajectory


@functools.partial(jax.jit, static_argnames=("num_steps", "sampler"))
def generate(state: EMAState, x0, key=None, *, num_steps: int, sampler: str):
    """Images (clipped to [-1, 1]) from noise x0 [N, 28, 28, C] with the averaged weights,
    and the trajectory of the first (see `sample`). key: unused (the samplers are
    deterministic), taken as the diffusion's generate takes it."""
    del key

    def v_fn(x, t):
        return state.apply_fn({"params": state.ema_params}, x, t)

    x, trajectory = sample(v_fn, x0, num_steps=num_steps, sampler=sampler)
    return jnp.clip(x, *PIXEL_RANGE), trajectory
