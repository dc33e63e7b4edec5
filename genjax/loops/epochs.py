"""Epochs over the training split in fused dispatches; evaluation, pictures and a checkpoint
at every epoch end (the autoencoder, the VAE, the FID feature network).

Checkpoints also fall at the first dispatch end after each checkpoint_interval steps; the
epoch's running metric sums travel in the checkpoint's record, so a resumed epoch reports the
same mean as an uninterrupted one. Vectorized runs share every dispatch; each keeps its own
metrics, pictures, W&B run and checkpoints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genjax import data, sharding
from genjax.config import ConfigError, EpochConfig
from genjax.run import NonFiniteError, Run, check_finite, stop_if_signalled
from genjax.steps import fused
from genjax.steps import state as state_lib

# A log point's pictures: (config, state, epoch, outputs) -> {"images": {key: array,
# (array, caption) or images.Deferred}, "scatters": {key: images.Scatter}}; outputs: the
# validation pass's per-example EVAL_OUTPUTS of the test split's first `keep` examples.
Pictures = Callable[[Any, Any, int, Mapping[str, np.ndarray]], Mapping[str, Mapping[str, Any]]]
# Figures at the end (likelihood bounds, FID): (config, state) -> {W&B key: float}; a str
# value (the FID feature network's digest) goes to the run's summary alone.
Evaluate = Callable[[Any, Any], Mapping[str, float | str]]


def check_batch_size(config, num_train: int) -> None:
    """A training batch fits the training split and divides among the devices."""
    if config.batch_size > num_train:
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the training split "
            f"({num_train} examples); use a smaller batch"
        )
    sharding.check_batch(config.batch_size)


def steps_per_epoch(config, num_train: int) -> int:
    """Full batches per pass over the training split (the remainder is dropped: static shapes)."""
    check_batch_size(config, num_train)
    full = num_train // config.batch_size
    cap = getattr(config, "steps_per_epoch", 0)  # Only epoch-trained experiments cap it.
    return min(full, cap) if cap else full


def total_steps(config: EpochConfig, dataset: data.Dataset) -> int:
    """The run's length in steps; checks the batch sizes against the data."""
    sharding.check_batch(min(config.eval_batch_size, len(dataset.test)), "--eval_batch_size")
    return config.epochs * steps_per_epoch(config, len(dataset.train))


def train(
    runs: Sequence[Run],
    dataset: data.Dataset,
    steps,
    *,
    pictures: Pictures | None = None,
    keep: int = 0,
    evaluate: Evaluate | None = None,
) -> list[dict[str, Any]]:
    """Trains the runs still to train to config.epochs; returns every run's summary.

    steps: the family's steps module (train_step, eval_step, PIXEL_RANGE, EVAL_OUTPUTS).
    keep: how many of the test split's first examples' EVAL_OUTPUTS `pictures` receives.
    """
    todo = [r for r in runs if r.training]
    if todo:
        _train(todo, dataset, steps, pictures, keep, evaluate)
    return [{"failure": r.failure} if r.failure else r.summary for r in runs]


def _train(runs, dataset, steps, pictures, keep, evaluate) -> None:
    config = runs[0].config
    per_epoch = steps_per_epoch(config, len(dataset.train))
    total = config.epochs * per_epoch
    vectorized = len(runs) > 1
    state = state_lib.stack([r.state for r in runs]) if vectorized else runs[0].state
    state = sharding.replicate(state)  # Parameters and optimizer on every device.
    train_split, test_split = data.to_device(dataset.train), data.to_device(dataset.test)
    keys = _keys(runs, vectorized)
    step = int(jnp.ravel(state.step)[0])  # Vectorized runs share their step.
    start_epoch, start_in_epoch = divmod(step, per_epoch)
    # Each run's running sums of the epoch's per-step training metrics: float64 on the host,
    # summed dispatch by dispatch, and checkpointed.
    sums = [dict(r.record.get("train_sums", {})) if start_in_epoch else {} for r in runs]
    print(f"{runs[0].name}: training on {sharding.describe()}", file=sys.stderr)
    bar = tqdm(total=total, initial=step, unit="step", disable=not config.progress,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    with bar:
        for epoch in range(start_epoch, config.epochs):
            bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
            order = fused.epoch_order(
                keys["data"], jnp.int32(epoch), n=len(train_split), vectorized=vectorized
            )
            for start, length in fused.chunks(per_epoch, config.steps_per_dispatch):
                if epoch == start_epoch and start < start_in_epoch:
                    # Done before the checkpoint this run resumed from, which lies on this
                    # grid (steps_per_dispatch is an identity field).
                    continue
                state, chunk = fused.train_steps(
                    state,
                    train_split.images,
                    train_split.labels,
                    keys["step"],
                    order,
                    jnp.int32(start),
                    train_step=steps.train_step,
                    num_steps=length,
                    batch_size=config.batch_size,
                    pixel_range=steps.PIXEL_RANGE,
                    vectorized=vectorized,
                )
                chunk = _per_run(jax.device_get(chunk), runs)
                for i, (r, metrics) in enumerate(zip(runs, chunk, strict=True)):
                    if r.training and _finite(runs, r, metrics, "train/", step + 1):
                        for k, v in metrics.items():
                            sums[i][k] = sums[i].get(k, 0.0) + float(np.sum(v, dtype=np.float64))
                if not any(r.training for r in runs):
                    return
                previous, step = step, step + length
                bar.update(length)
                if step % per_epoch == 0:
                    continue  # The epoch's end checkpoints below, after evaluation.
                interval = config.checkpoint_interval
                crossed = interval and step // interval > previous // interval
                if crossed or runs[0].stop.signum is not None:
                    for i, r in enumerate(runs):
                        if r.training:
                            r.save(step, _run_state(state, i, vectorized), train_sums=sums[i])
                    stop_if_signalled(runs, step)

            val = fused.evaluate(
                state,
                test_split.images,
                test_split.labels,
                keys["eval"],
                eval_step=steps.eval_step,
                batch_size=min(config.eval_batch_size, len(test_split)),
                pixel_range=steps.PIXEL_RANGE,
                vectorized=vectorized,
                outputs=steps.EVAL_OUTPUTS,
                keep=keep,
            )
            for i, (r, val_r) in enumerate(zip(runs, _per_run(jax.device_get(val), runs),
                                               strict=True)):  # fmt: skip
                outputs = {k: val_r.pop(k) for k in steps.EVAL_OUTPUTS if k in val_r}
                if not r.training or not _finite(runs, r, val_r, "val/", step):
                    continue
                metrics = {f"train/{k}": v / per_epoch for k, v in sums[i].items()}
                metrics |= {f"val/{k}": float(v) for k, v in val_r.items()}
                metrics |= {"epoch": epoch + 1, "step": step}
                run_state = _run_state(state, i, vectorized)
                stop = r.ask_early_stop(epoch + 1, metrics)  # Sees every epoch's row.
                last = epoch + 1 == config.epochs or stop
                notes = {}  # Summary only: W&B history rows take numbers.
                if last and evaluate is not None and not stop:
                    # Logged with the last epoch, so they share its W&B step.
                    figures = evaluate(r.config, run_state)
                    notes = {k: v for k, v in figures.items() if isinstance(v, str)}
                    metrics |= {k: float(v) for k, v in figures.items() if k not in notes}
                    if not _finite(runs, r, {k: v for k, v in metrics.items() if "/" in k}, "",
                                   step):  # fmt: skip
                        continue
                if i == 0:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if "/" in k})
                shown = (
                    r.timed(pictures, r.config, run_state, epoch + 1, outputs) if pictures else {}
                )
                if not last and (epoch + 1) % config.scatter_table_interval:
                    # Native W&B scatters every scatter_table_interval epochs and at the end
                    # (their PNGs every epoch): see the config field.
                    shown = {k: v for k, v in shown.items() if k != "scatters"}
                r.log(epoch + 1, metrics, shown)
                if last:
                    # Written before the final checkpoint: a process killed between the two
                    # redoes the last epoch (identically) and writes it again.
                    r.finish(metrics | notes, run_state)
                r.save(step, run_state, train_sums={})
            sums = [{} for _ in runs]
            if not any(r.training for r in runs):
                return
            stop_if_signalled(runs, step)


def _keys(runs: Sequence[Run], vectorized: bool) -> dict[str, jax.Array]:
    """The run keys the fused program takes; one per run, stacked, when vectorized."""
    names = ("step", "data", "eval")
    if not vectorized:
        return {n: getattr(runs[0].keys, n) for n in names}
    return {n: jnp.stack([getattr(r.keys, n) for r in runs]) for n in names}


def _per_run(tree: Any, runs: Sequence[Run]) -> list[Any]:
    """Host metrics with a leading run axis (vectorized) as one tree per run."""
    if len(runs) == 1:
        return [tree]
    return [jax.tree.map(lambda v, i=i: v[i], tree) for i in range(len(runs))]


def _run_state(state: Any, index: int, vectorized: bool) -> Any:
    return state_lib.unstack(state, index) if vectorized else state


def _finite(runs: Sequence[Run], r: Run, metrics: Mapping[str, Any], prefix, step) -> bool:
    """Whether run r's metrics are finite. A NaN ends a lone run (NonFiniteError); among
    vectorized runs it fails that run alone, and the others go on."""
    try:
        check_finite(metrics, prefix, step)
    except NonFiniteError as e:
        if len(runs) == 1:
            raise
        r.fail(e)
        return False
    return True
