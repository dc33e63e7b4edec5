"""DDPM (Ho et al. 2020): noise schedules, the epsilon loss, its training step with the
weights' moving average, and the ancestral and DDIM (Song et al. 2021) samplers.

Steps t = 0 .. T-1; alpha_bar[t] = prod_{s <= t} (1 - beta[s]); the forward process is
x_t = sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps. The network sees t / T.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genjax import sharding
from genjax.steps import ema
from genjax.steps.ema import CPU_COMPILER_OPTIONS as CPU_COMPILER_OPTIONS  # The loop's.
from genjax.steps.ema import EMAState

PIXEL_RANGE = (-1.0, 1.0)  # Data scaled to the range of the unit-variance noise.
EVAL_OUTPUTS = ()  # No per-example output is plotted.
SAMPLERS = ("ancestral", "ddim")


def linear_betas(timesteps: int) -> np.ndarray:
    """Ho et al.'s 1e-4 .. 0.02 over 1000 steps, scaled by 1000 / T for other T (Nichol &
    Dhariwal 2021), so alpha_bar at the end stays near e^-10. float64 [T]."""
    scale = 1000.0 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)


def cosine_alpha_bar(s: np.ndarray, timesteps: int, offset: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's f(s) / f(0), f(s) = cos^2(pi/2 (s/T + offset) / (1 + offset))."""

    def f(s):
        return (
            np.cos((np.asarray(s, np.float64) / timesteps + offset) / (1 + offset) * np.pi / 2) ** 2
        )

    return f(s) / f(0)


def cosine_betas(timesteps: int) -> np.ndarray:
    """beta[t] = 1 - abar(t + 1) / abar(t) of the cosine alpha_bar, at most 0.999 (its last
    would be 1). float64 [T]."""
    s = np.arange(timesteps + 1)
    abar = cosine_alpha_bar(s, timesteps)
    return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)


def betas(schedule: str, timesteps: int) -> np.ndarray:
    """The named schedule's betas, float64 [T]."""
    if schedule == "linear":
        return linear_betas(timesteps)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    raise ValueError(f"unknown noise schedule {schedule!r}: linear or cosine")


def alpha_bars(schedule: str, timesteps: int) -> np.ndarray:
    """alpha_bar[t] = prod_{s <= t} (1 - beta[s]), float64 [T]."""
    return np.cumprod(1.0 - betas(schedule, timesteps))


def q_sample(abar_t: jax.Array, x0: jax.Array, eps: jax.Array) -> jax.Array:
    """The forward process: sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, abar_t [B]."""
    abar_t = abar_t[:, None, None, None]
    return jnp.sqrt(abar_t) * x0 + jnp.sqrt(1.0 - abar_t) * eps


def epsilon_loss(eps_hat: jax.Array, eps: jax.Array) -> jax.Array:
    """Ho et al.'s simple loss per example: mean squared error over pixels, [B]."""
    return jnp.mean(jnp.square(eps_hat - eps), axis=tuple(range(1, eps.ndim)))


class DiffusionState(EMAState):
    schedule: str = struct.field(pytree_node=False, default="linear")
    timesteps: int = struct.field(pytree_node=False, default=1000)


def create_state(
    model, learning_rate: float, ema_decay: float, schedule: str, timesteps: int, key
) -> DiffusionState:
    """The network with clipped Adam(learning_rate), its moving average and the schedule."""
    betas(schedule, timesteps)  # Refuses an unknown schedule now, not at the first step.
    return ema.create(
        model, learning_rate, ema_decay, key, DiffusionState, schedule=schedule, timesteps=timesteps
    )


def _schedule(state: DiffusionState) -> jax.Array:
    # Computed in float64 on the host, a float32 constant of the compiled step.
    return jnp.asarray(alpha_bars(state.schedule, state.timesteps), jnp.float32)


def per_example_loss(state: DiffusionState, params, x0: jax.Array, key: jax.Array) -> jax.Array:
    """The epsilon loss [B] of x0 noised at t ~ U{0..T-1}, both drawn from key."""
    t_key, noise_key = jax.random.split(key)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, state.timesteps)
    eps = jax.random.normal(noise_key, x0.shape)
    t, eps = sharding.constrain_batch((t, eps))  # Each device its slice, as of the batch.
    x_t = q_sample(_schedule(state)[t], x0, eps)
    eps_hat = state.apply_fn({"params": params}, x_t, t / state.timesteps)
    return epsilon_loss(eps_hat, eps)


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: DiffusionState, batch, key):
    """One Adam step on the epsilon loss of the batch's images, then the average's update."""
    key = jax.random.fold_in(key, state.step)
    return ema.train_step(
        state, lambda params, k: per_example_loss(state, params, batch["image"], k), key
    )


@jax.jit
def eval_step(state: DiffusionState, batch, key):
    """The epsilon loss [B] of held-out images at random steps, with the averaged weights."""
    return {"loss": per_example_loss(state, state.ema_params, batch["image"], key)}


def sampling_steps(timesteps: int, num_steps: int) -> np.ndarray:
    """The steps a sampler visits, evenly spaced from T-1 down to 0 (num_steps <= T)."""
    if not 1 <= num_steps <= timesteps:
        raise ValueError(f"{num_steps} sampling steps: must be in [1, {timesteps}]")
    return np.round(np.linspace(timesteps - 1, 0, num_steps)).astype(np.int32)


def _predict(eps_fn, x, t, abar_t, clip):
    """(x0 estimate, epsilon) at x_t; with clip, x0 is clipped to PIXEL_RANGE and epsilon
    recomputed from it, so the update stays on the line through x_t and the clipped x0."""
    eps = eps_fn(x, jnp.full((x.shape[0],), t))
    x0 = (x - jnp.sqrt(1.0 - abar_t) * eps) / jnp.sqrt(abar_t)
    if clip:
        x0 = jnp.clip(x0, *PIXEL_RANGE)
        eps = (x - jnp.sqrt(abar_t) * x0) / jnp.sqrt(1.0 - abar_t)
    return x0, eps


def sample(eps_fn, abar: jax.Array, x, key, *, num_steps: int, sampler: str, eta=0.0, clip=True):
    """x_T [N, ...] -> (x_0 [N, ...], trajectory): ancestral or DDIM steps over
    sampling_steps(T, num_steps). trajectory: (x_t, x0 estimate) of example 0 before each
    step and x_0 after the last, [num_steps + 1, ...] each.

    eps_fn(x_t, t [N] int) -> epsilon; abar: alpha_bar [T]. Step i draws its noise from
    fold_in(key, i). DDIM (Song et al. eq. 12) with eta; ancestral: the DDPM posterior
    q(x_prev | x_t, x0) of the respaced schedule, which DDIM with eta = 1 equals.
    """
    timesteps = abar.shape[0]
    steps = sampling_steps(timesteps, num_steps)
    prev = np.concatenate([steps[1:], [timesteps]])  # T: x_0 itself, alpha_bar 1.
    abar_prev_all = jnp.concatenate([abar, jnp.ones((1,), abar.dtype)])

    def body(x, inputs):
        i, t, t_prev = inputs
        a, a_prev = abar[t], abar_prev_all[t_prev]
        x0, eps = _predict(eps_fn, x, t, a, clip)
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape)
        if sampler == "ddim":
            sigma = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
            direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
            x_prev = jnp.sqrt(a_prev) * x0 + direction + sigma * z
        elif sampler == "ancestral":
            alpha = a / a_prev  # The respaced step's 1 - beta.
            mean = (
                jnp.sqrt(a_prev) * (1.0 - alpha) * x0 + jnp.sqrt(alpha) * (1.0 - a_prev) * x
            ) / (1.0 - a)
            variance = (1.0 - a_prev) / (1.0 - a) * (1.0 - alpha)
            x_prev = mean + jnp.sqrt(variance) * z
        else:
            raise ValueError(f"unknown sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
        return x_prev, (x[0], x0[0])

    inputs = (jnp.arange(num_steps), jnp.asarray(steps), jnp.asarray(prev))
    x, (xs, x0s) = jax.lax.scan(body, x, inputs)
    trajectory = (jnp.concatenate([xs, x[None, 0]]), jnp.concatenate([x0s, x[None, 0]]))
    return x, trajectory


@functools.partial(jax.jit, static_argnames=("num_steps", "sampler", "eta"))
def generate(state: DiffusionState, x_T, key, *, num_steps: int, sampler: str, eta: float = 0.0):
    """Images in [-1, 1] from noise x_T [N, 28, 28, C] with the averaged weights, and the
    trajectory of the first (see `sample`)."""
    timesteps = state.timesteps

    def eps_fn(x, t):
        return state.apply_fn({"params": state.ema_params}, x, t / timesteps)

    return sample(eps_fn, _schedule(state), x_T, key, num_steps=num_steps, sampler=sampler, eta=eta)
