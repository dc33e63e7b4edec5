"""Train-state construction shared by the autoencoder families."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState plus `hparams`: scalar settings the step reads from the state.

    A setting kept as an array in the state (the VAE's KL weight; the learning rate, which
    optax.inject_hyperparams keeps in opt_state) can differ between trials that are stacked
    and trained together under vmap; a setting bound as a Python constant cannot.
    """

    hparams: dict[str, Any] = struct.field(default_factory=dict)


def adam(learning_rate: float) -> optax.GradientTransformation:
    """Adam with its learning rate held in opt_state (so it can differ across vmapped trials)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def create(
    apply_fn,
    params,
    tx: optax.GradientTransformation,
    cls: type[TrainState] = TrainState,
    static: dict[str, Any] | None = None,
    **hparams: float,
) -> TrainState:
    """A `cls` state whose step is a strongly typed int32 array and hparams float32 arrays;
    `static`: the settings a subclass declares as static fields (see VAEState).

    TrainState.create stores step as the Python int 0, which jit traces as a weakly typed
    scalar; the step that comes back is a strong int32, so the second dispatch would compile
    the whole fused program again.
    """
    state = cls.create(
        apply_fn=apply_fn,
        params=params,
        tx=tx,
        hparams={k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()},
        **(static or {}),
    )
    return state.replace(step=jnp.zeros((), jnp.int32))


def stack(states: list[Any]) -> Any:
    """Trials' states stacked on a new leading axis, in the first state's structure.

    The first state's static parts (apply_fn, tx) serve every trial: trials that may be
    stacked differ only in array values (an experiment's VECTOR_FIELDS).
    """
    treedef = jax.tree.structure(states[0])
    leaves = [jax.tree.leaves(s) for s in states]
    return jax.tree.unflatten(treedef, [jnp.stack(xs) for xs in zip(*leaves, strict=True)])


def unstack(stacked: Any, index: int) -> Any:
    """Trial `index`'s state out of a stacked one."""
    return jax.tree.map(lambda x: x[index], stacked)
