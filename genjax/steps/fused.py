"""Many training steps per device dispatch, and whole-split evaluation, on device data.

The step functions plug in as static arguments:
  train_step(state, batch, key) -> (state, metrics)   metrics: flat dict of scalars
  eval_step(state, batch, key) -> metrics             metrics: flat dict of [B] arrays
                                                      (and any per-example outputs named
                                                      to `evaluate`, [B, ...])
A batch is {"image": float [B, H, W, C] scaled to the model's pixel range, "label": int [B]}.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from genjax import data, sharding

TrainStep = Callable
EvalStep = Callable


def _batch(images, labels, idx, pixel_range):
    # Over several devices each takes its slice of the batch; the gathered images come
    # from the split replicated on every device.
    batch = {"image": data.scale(images[idx], pixel_range), "label": labels[idx]}
    return sharding.constrain_batch(batch)


def _train_steps(
    state,
    images,
    labels,
    step_key,
    order,
    start,
    *,
    train_step: TrainStep,
    num_steps: int,
    batch_size: int,
    pixel_range: Sequence[float],
):
    def body(state, i):
        idx = jax.lax.dynamic_slice_in_dim(order, (start + i) * batch_size, batch_size)
        return train_step(state, _batch(images, labels, idx, pixel_range), step_key)

    return jax.lax.scan(body, state, jnp.arange(num_steps))


@functools.partial(jax.jit, static_argnames=("n", "vectorized"))
def epoch_order(data_key: jax.Array, epoch: jax.Array, *, n: int, vectorized: bool = False):
    """The epoch's example order, [n] ([trials, n] when vectorized: one per data key).

    Drawn once per epoch and passed to every dispatch of it: the permutation of a 60,000
    example split is a few sorts (~35 ms on a 2-core CPU), 3-4% of a 500-step dispatch of
    the autoencoder at batch 32 if each dispatch drew it again.
    """
    draw = functools.partial(data.epoch_permutation, n=n)
    if vectorized:
        draw = jax.vmap(draw, in_axes=(0, None))
    return draw(data_key, epoch)


@functools.partial(
    jax.jit,
    static_argnames=("train_step", "num_steps", "batch_size", "pixel_range", "vectorized"),
    donate_argnames="state",
)
def train_steps(
    state,
    images: jax.Array,
    labels: jax.Array,
    step_key: jax.Array,
    order: jax.Array,
    start: jax.Array,
    *,
    train_step: TrainStep,
    num_steps: int,
    batch_size: int,
    pixel_range: Sequence[float],
    vectorized: bool = False,
):
    """Runs steps start .. start+num_steps-1 of an epoch in one lax.scan; metrics are
    [num_steps]. Step i trains on examples order[i * batch_size : (i + 1) * batch_size].

    The order is epoch_order(data_key, epoch) and the step's randomness depends only on
    (step_key, state.step), so a chunked, resumed or re-run epoch draws the same numbers.
    vectorized: state, step_key and order carry a leading trial axis, and the trials run
    together under vmap on the one copy of the data (metrics [trials, num_steps]).
    """
    run = functools.partial(
        _train_steps,
        train_step=train_step,
        num_steps=num_steps,
        batch_size=batch_size,
        pixel_range=pixel_range,
    )
    if vectorized:
        run = jax.vmap(run, in_axes=(0, None, None, 0, 0, None))
    return run(state, images, labels, step_key, order, start)


def draw_indices(data_key, step, *, n: int, batch_size: int, sampling: str) -> jax.Array:
    """A step's batch when training is counted in iterations, not epochs: drawn at random
    with replacement (Keras-GAN's np.random.randint) from the data key folded with the step,
    or ("epochs") the step's slot of its epoch's shuffled order."""
    if sampling == "random":
        return jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, n)
    epoch, position = jnp.divmod(step, n // batch_size)
    perm = data.epoch_permutation(data_key, epoch, n)
    return jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)


def _sampled_step(
    state, images, labels, step_key, data_key, *, train_step, batch_size, pixel_range, sampling
):
    idx = draw_indices(
        data_key, state.step, n=images.shape[0], batch_size=batch_size, sampling=sampling
    )
    return train_step(state, _batch(images, labels, idx, pixel_range), step_key)


_SAMPLED = ("train_step", "batch_size", "pixel_range", "sampling")


def _sampled_steps(state, images, labels, step_key, data_key, *, num_steps: int, **static):
    def body(state, _):
        return _sampled_step(state, images, labels, step_key, data_key, **static)

    return jax.lax.scan(body, state, None, length=num_steps)


@functools.cache
def _jitted(fn, static: tuple[str, ...], compiler_options: tuple) -> Callable:
    """fn jitted once per set of XLA compiler options (a jit's are fixed when it is made)."""
    options = dict(compiler_options) or None
    return jax.jit(fn, static_argnames=static, donate_argnames="state", compiler_options=options)


def sampled_step(state, images, labels, step_key, data_key, *, compiler_options=(), **static):
    """One step on the batch draw_indices gives it: (state, metrics of scalars), compiled
    with XLA's `compiler_options` ((name, value) pairs)."""
    step = _jitted(_sampled_step, _SAMPLED, tuple(compiler_options))
    return step(state, images, labels, step_key, data_key, **static)


def sampled_steps(state, images, labels, step_key, data_key, *, compiler_options=(), **static):
    """num_steps such steps in one lax.scan: (state, metrics [num_steps] each)."""
    steps = _jitted(_sampled_steps, (*_SAMPLED, "num_steps"), tuple(compiler_options))
    return steps(state, images, labels, step_key, data_key, **static)


def _evaluate(state, images, labels, key, *, eval_step, batch_size, pixel_range, outputs, keep):
    n = images.shape[0]
    num_batches = -(-n // batch_size)
    # Batches that hold the first `keep` examples: their outputs come back as the scan's ys.
    kept_batches = -(-min(keep, n) // batch_size) if outputs else 0

    def body(totals, i, *, keeps=False):
        idx = i * batch_size + jnp.arange(batch_size)
        mask = (idx < n).astype(jnp.float32)
        batch = _batch(images, labels, jnp.minimum(idx, n - 1), pixel_range)
        metrics = dict(eval_step(state, batch, jax.random.fold_in(key, i)))
        missing = [k for k in outputs if k not in metrics]
        if missing:
            raise ValueError(f"eval_step returns no {missing}; it returns {sorted(metrics)}")
        kept = {k: metrics.pop(k) for k in outputs}
        for k, v in metrics.items():
            if v.shape != mask.shape:
                raise ValueError(
                    f"eval_step's {k!r} has shape {v.shape}, not [batch] {mask.shape}: name "
                    "a per-example output in the steps module's EVAL_OUTPUTS to keep it whole"
                )
        sums = {k: jnp.sum(v * mask) for k, v in metrics.items()}
        if totals is not None:
            sums = jax.tree.map(jnp.add, totals, sums)
        return sums, (kept if keeps else None)

    # The first batch is traced outside the scans to learn the metric names.
    totals, first = body(None, 0, keeps=True)
    totals, rest = jax.lax.scan(
        functools.partial(body, keeps=True), totals, jnp.arange(1, max(kept_batches, 1))
    )
    totals, _ = jax.lax.scan(body, totals, jnp.arange(max(kept_batches, 1), num_batches))
    means = jax.tree.map(lambda t: t / n, totals)
    if not kept_batches:
        return means
    kept = jax.tree.map(
        lambda a, b: jnp.concatenate([a, b.reshape(-1, *b.shape[2:])])[: min(keep, n)],
        first,
        rest,
    )
    # Replicated, so that every process (of several hosts) can fetch the pictures' inputs.
    return means | sharding.constrain_replicated(kept)


@functools.partial(
    jax.jit,
    static_argnames=("eval_step", "batch_size", "pixel_range", "vectorized", "outputs", "keep"),
)
def evaluate(
    state,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    eval_step: EvalStep,
    batch_size: int,
    pixel_range: Sequence[float],
    vectorized: bool = False,
    outputs: tuple[str, ...] = (),
    keep: int = 0,
) -> dict[str, jax.Array]:
    """Mean of eval_step's per-example metrics over a whole split, in fixed-size batches.

    The last batch is filled with repeats of the final example and masked out, so every
    example counts exactly once and only one batch shape is ever compiled. vectorized: as
    in train_steps (state and key per trial; metrics [trials]).

    outputs: names of eval_step's per-example outputs ([B, ...], e.g. latent codes) that are
    not averaged: each comes back as the first `keep` examples' values, [min(keep, n),
    ...], from the same pass (pictures of the split then need no second forward pass);
    keep=0 drops them. A tuple: static arguments are hashed.
    """
    run = functools.partial(
        _evaluate,
        eval_step=eval_step,
        batch_size=batch_size,
        pixel_range=pixel_range,
        outputs=outputs,
        keep=keep,
    )
    if vectorized:
        run = jax.vmap(run, in_axes=(0, None, None, 0))
    return run(state, images, labels, key)


def chunks(steps_per_epoch: int, steps_per_dispatch: int) -> list[tuple[int, int]]:
    """(start, length) of each dispatch in an epoch; at most two distinct lengths compile.

    The grid depends only on these two numbers, and checkpoints are taken only at its
    edges, so a run resumed from a checkpoint replays exactly the dispatches (and so the
    compiled programs and the numbers) of an uninterrupted run.
    """
    starts = range(0, steps_per_epoch, steps_per_dispatch)
    return [(s, min(steps_per_dispatch, steps_per_epoch - s)) for s in starts]
