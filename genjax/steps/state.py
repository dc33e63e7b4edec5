"""Train-state construction shared by the model families."""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax.training import train_state


def create(apply_fn, params, tx: optax.GradientTransformation) -> train_state.TrainState:
    """A TrainState whose step is a strongly typed int32 array.

    TrainState.create stores step as the Python int 0, which jit traces as a weakly typed
    scalar; the step that comes back is a strong int32, so the second dispatch would compile
    the whole fused program again.
    """
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=tx)
    return state.replace(step=jnp.zeros((), jnp.int32))
