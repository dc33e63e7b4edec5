"""Iterations in segments that end at image points, evaluation points and checkpoints (the
GAN): every iteration's metrics come back with its segment and are logged afterwards, one
W&B step per logged iteration, so logging every iteration costs no host round trip each.

Batches are drawn per step on the device (fused.draw_indices): at random with replacement,
as Keras-GAN, or from shuffled epochs. How a segment runs is --fuse: one jitted call per
iteration ("loop"; XLA:CPU runs convolutions inside a lax.scan very slowly), or one lax.scan
("scan"); "auto" picks the loop on CPU only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genjax import data, sharding
from genjax.config import ConfigError, IterationConfig
from genjax.loops.epochs import Evaluate, check_batch_size
from genjax.run import Run, check_finite, stop_if_signalled
from genjax.steps import fused

# An image point's pictures: (config, state, iteration) -> {"images": {key: array or
# (array, caption)}}.
Pictures = Callable[[Any, Any, int], Mapping[str, Mapping[str, Any]]]
# The console line at each segment's end: (iteration, last logged row) -> text.
ReportLine = Callable[[int, Mapping[str, float]], str]


def total_steps(config: IterationConfig, dataset: data.Dataset) -> int:
    """The run's length in iterations; checks the batch sizes against the data."""
    check_batch_size(config, len(dataset.train))
    sharding.check_batch(config.draw_size())  # The images each iteration draws, too.
    if config.sampling == "epochs" and config.draw_size() > len(dataset.train):
        raise ConfigError(
            f"one iteration draws {config.draw_size()} training images, more than the "
            f"{len(dataset.train)} of the training split; use a smaller --batch_size"
        )
    eval_batch = min(config.eval_batch_size, len(dataset.test))
    sharding.check_batch(eval_batch, "--eval_batch_size")
    if config.val_examples and min(config.val_examples, len(dataset.test)) < eval_batch:
        raise ConfigError(
            f"--val_examples={config.val_examples} is less than one batch of {eval_batch} "
            "test images (--eval_batch_size), so val/* would be empty; use 0 (none) or at "
            f"least {eval_batch}, or a smaller --eval_batch_size"
        )
    return config.iterations


def evaluating(config: IterationConfig) -> bool:
    """Whether eval_interval points compute anything (val/*, or FID and its kin)."""
    return bool(config.val_examples or getattr(config, "eval_samples", 0))


def segments(config: IterationConfig, start: int) -> list[tuple[int, int]]:
    """(start, length) segments from `start`: edges at image, evaluation (if any) and
    checkpoint points and the end."""
    total, edges = config.iterations, {config.iterations}
    eval_every = config.eval_interval if evaluating(config) else 0
    for every in (config.gen_interval, eval_every, config.checkpoint_interval):
        if every:
            edges |= set(range(every, total, every))
    out, a = [], start
    for b in sorted(x for x in edges if x > start):
        out.append((a, b - a))
        a = b
    return out


def train(
    run: Run,
    dataset: data.Dataset,
    steps,
    *,
    pictures: Pictures | None = None,
    evaluate: Evaluate | None = None,
    report_line: ReportLine | None = None,
) -> dict[str, Any]:
    """Trains the run to config.iterations (if still to train); returns its summary.

    steps: the family's steps module (train_step, eval_step, PIXEL_RANGE). evaluate: figures
    at every eval_interval and at the end (FID), logged with the validation pass's.
    """
    if run.training:
        _train(run, dataset, steps, pictures, evaluate, report_line)
    return {"failure": run.failure} if run.failure else run.summary


def _train(run, dataset, steps, pictures, evaluate, report_line) -> None:
    config, keys = run.config, run.keys
    total = config.iterations
    segment = segment_runner(config, steps, data.to_device(dataset.train), keys, run.stop)

    def is_point(n: int, every: int) -> bool:
        return n == total or bool(every) and n % every == 0

    state = sharding.replicate(run.state)
    step = int(state.step)
    last_row: dict[str, float] = {}
    last_eval: dict[str, float] = {}  # Goes into summary.json with the final row.
    print(f"{run.name}: training on {sharding.describe()}", file=sys.stderr)
    bar = tqdm(total=total, initial=step, unit="step", disable=not config.progress,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    with bar:
        for start, length in segments(config, step):
            state, seg = segment(state, length)
            seg = jax.device_get(seg)
            check_finite(seg, "train/", start + 1)
            length = len(next(iter(seg.values())))  # Fewer when a signal cut it short.
            step = start + length
            bar.update(length)
            for i in range(length):  # Iteration n (1-based) is W&B step n.
                n = start + i + 1
                row = {f"train/{k}": float(v[i]) for k, v in seg.items()}
                if n % config.log_interval and n != step:
                    continue
                last_row, shown, figures = row, None, {}
                if n == step and pictures is not None and is_point(n, config.gen_interval):
                    shown = run.timed(pictures, config, state, n)
                notes = {}  # Summary only (the FID network's digest): W&B rows take numbers.
                if n == step and evaluating(config) and is_point(n, config.eval_interval):
                    figures = _validation(state, dataset.test, keys, config, steps)
                    if evaluate is not None:
                        found = evaluate(config, state)
                        notes = {k: v for k, v in found.items() if isinstance(v, str)}
                        figures |= {k: float(v) for k, v in found.items() if k not in notes}
                    check_finite(figures, "", n)
                    last_eval = figures | notes
                run.log(n, {**row, **figures, "iteration": n}, shown)
                run.ask_early_stop(n, row)
            if report_line is not None:
                line = report_line(step, last_row)
                bar.set_postfix_str(line)
                if step % config.gen_interval == 0 or step == total:
                    tqdm.write(line, file=sys.stderr)
            done = step == total or run.stopped_early
            if done:
                run.finish({**last_row, **last_eval, "iteration": step}, state)
            run.save(step, state)
            if done:
                return
            stop_if_signalled([run], step)


def compiler_options(steps) -> dict:
    """The XLA options a family's training step is compiled with here: its steps module's
    CPU_COMPILER_OPTIONS on CPU, none elsewhere."""
    if jax.default_backend() != "cpu":
        return {}
    return dict(getattr(steps, "CPU_COMPILER_OPTIONS", {}))


def segment_runner(config: IterationConfig, steps, train_split, keys, stop, options=None):
    """(state, length) -> (state, metrics [length] each): `length` iterations as --fuse says,
    each on the batch fused.draw_indices gives its step. The loop and the benchmark use it.

    "loop": one jitted call per iteration, metrics kept on the device until the segment's end.
    The host waits for the previous iteration before going on (one in flight), so the stop
    flag (stop.signum) is read as iterations finish and a signal ends the segment within
    about one iteration. Several devices wait for each iteration: back-to-back cross-device
    dispatches can abort XLA:CPU's collectives (a rendezvous timeout).

    options: XLA compiler options for the step; None = compiler_options(steps)."""
    fuse = config.fuse
    if fuse == "auto":
        fuse = "loop" if jax.default_backend() == "cpu" else "scan"
    arrays = (train_split.images, train_split.labels, keys.step, keys.data)
    static = dict(
        train_step=steps.train_step,
        batch_size=config.draw_size(),
        pixel_range=steps.PIXEL_RANGE,
        sampling=config.sampling,
    )
    options = compiler_options(steps) if options is None else options
    if options:
        static["compiler_options"] = tuple(options.items())
    several_devices = sharding.count() > 1

    def segment(state, length):
        if fuse == "scan":
            return fused.sampled_steps(state, *arrays, num_steps=length, **static)
        rows = []
        for _ in range(length):
            state, m = fused.sampled_step(state, *arrays, **static)
            jax.block_until_ready(m if several_devices or not rows else rows[-1])
            rows.append(m)
            if stop.signum is not None:
                break
        return state, {k: jnp.stack([r[k] for r in rows]) for k in rows[0]}

    return segment


def _validation(state, test: data.Split, keys, config, steps) -> dict[str, float]:
    """The family's eval_step over the first val_examples test images, as val/*: one jitted
    call per batch (a lax.scan over batches would run convolutions slowly on CPU)."""
    batch_size = min(config.eval_batch_size, len(test))
    batches = min(config.val_examples, len(test)) // batch_size
    sums: dict[str, float] = {}
    for i in range(batches):
        part = slice(i * batch_size, (i + 1) * batch_size)
        batch = {
            "image": data.scale(jnp.asarray(test.images[part]), steps.PIXEL_RANGE),
            "label": jnp.asarray(test.labels[part]),
        }
        values = jax.device_get(steps.eval_step(state, batch, jax.random.fold_in(keys.eval, i)))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(v, dtype=np.float64))
    return {f"val/{k}": v / (batches * batch_size) for k, v in sums.items()}
