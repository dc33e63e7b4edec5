"""The host loops: epochs of fused steps (autoencoder, VAE) and iterations with image points
(GAN). Each runs from a restored or fresh state inside loop.run, which owns the rest."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genjax import data, sharding
from genjax.loop import NonFiniteError, RunContext, check_finite, steps_per_epoch
from genjax.steps import fused
from genjax.steps import state as state_lib


def _bar(ctx: RunContext, total: int, initial: int) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        disable=not ctx.config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )


class EpochTrainer:
    """Epochs over the training split in fused dispatches; evaluation and pictures per epoch.

    Checkpoints at every epoch end and at the first dispatch end after each
    checkpoint_interval steps; the epoch's running metric sums travel in the record, so a
    resumed epoch reports the same mean as an uninterrupted one. Vectorized trials share
    every dispatch; each keeps its own metrics, pictures, W&B run and checkpoints.
    """

    def __init__(self, config, dataset: data.Dataset):
        self.config = config
        self.per_epoch = steps_per_epoch(config, len(dataset.train))  # Checks the batch size.
        sharding.check_batch(min(config.eval_batch_size, len(dataset.test)), "--eval_batch_size")
        self.total_steps = config.epochs * self.per_epoch

    def __call__(
        self, ctxs: list[RunContext], state: Any, vectorized: bool
    ) -> list[dict[str, Any]]:
        config, family, per_epoch = self.config, ctxs[0].family, self.per_epoch
        train_split = data.to_device(ctxs[0].dataset.train)
        test_split = data.to_device(ctxs[0].dataset.test)
        keys = _keys(ctxs, vectorized)
        step = int(jnp.ravel(state.step)[0])  # Vectorized trials share their step.
        start_epoch, start_in_epoch = divmod(step, per_epoch)
        # Running sums of each epoch's per-step training metrics, per trial: float64 on the
        # host, summed dispatch by dispatch, and checkpointed.
        sums = [dict(c.record.get("train_sums", {})) if start_in_epoch else {} for c in ctxs]
        clock, runs = ctxs[0].clock, [c.wandb_run for c in ctxs]
        summaries: list[dict[str, Any]] = [{} for _ in ctxs]
        ended = [False] * len(ctxs)  # Failed, or stopped early, while others go on.
        with _bar(ctxs[0], self.total_steps, step) as bar:
            for epoch in range(start_epoch, config.epochs):
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
                order = fused.epoch_order(
                    keys["data"], jnp.int32(epoch), n=len(train_split), vectorized=vectorized
                )
                for start, length in fused.chunks(per_epoch, config.steps_per_dispatch):
                    if epoch == start_epoch and start < start_in_epoch:
                        # Done before the checkpoint this run resumed from, which lies on
                        # this grid (steps_per_dispatch is an identity field).
                        continue
                    mark = clock.start(runs, ready=order)
                    state, chunk = fused.train_steps(
                        state,
                        train_split.images,
                        train_split.labels,
                        keys["step"],
                        order,
                        jnp.int32(start),
                        train_step=family.train_step,
                        num_steps=length,
                        batch_size=config.batch_size,
                        pixel_range=family.pixel_range,
                        vectorized=vectorized,
                    )
                    chunk = _per_trial(jax.device_get(chunk), len(ctxs), vectorized)
                    clock.stop(mark, runs, usual=length == config.steps_per_dispatch)
                    for i, metrics in enumerate(chunk):
                        if not ended[i] and _finite(ctxs, i, metrics, "train/", step + 1):
                            for k, v in metrics.items():
                                sums[i][k] = sums[i].get(k, 0.0) + float(
                                    np.sum(v, dtype=np.float64)
                                )
                        ended[i] = ended[i] or bool(ctxs[i].failure)
                    if all(ended):
                        return _results(ctxs, summaries)
                    previous, step = step, step + length
                    bar.update(length)
                    if step % per_epoch == 0:
                        continue  # The epoch's end checkpoints below, after evaluation.
                    interval = config.checkpoint_interval
                    crossed = interval and step // interval > previous // interval
                    if crossed or ctxs[0].stop.signum is not None:
                        for i, ctx in enumerate(ctxs):
                            if not ended[i]:
                                trial_state = _trial_state(state, i, vectorized)
                                ctx.save(step, trial_state, train_sums=sums[i])
                        ctxs[0].stop_if_signalled(step)

                val = fused.evaluate(
                    state,
                    test_split.images,
                    test_split.labels,
                    keys["eval"],
                    eval_step=family.eval_step,
                    batch_size=min(config.eval_batch_size, len(test_split)),
                    pixel_range=family.pixel_range,
                    vectorized=vectorized,
                    outputs=family.eval_outputs,
                    # Vectorized trials differ only in vector fields: one count for all.
                    keep=ctxs[0].trial.media_examples,
                )
                val = _per_trial(jax.device_get(val), len(ctxs), vectorized)
                outputs = [{k: v.pop(k) for k in family.eval_outputs if k in v} for v in val]
                for i, ctx in enumerate(ctxs):
                    if ended[i] or not _finite(ctxs, i, val[i], "val/", step):
                        ended[i] = True
                        continue
                    metrics = {f"train/{k}": v / per_epoch for k, v in sums[i].items()}
                    metrics |= {f"val/{k}": float(v) for k, v in val[i].items()}
                    metrics |= {"epoch": epoch + 1, "step": step}
                    trial_state = _trial_state(state, i, vectorized)
                    stop = ctx.ask_early_stop(epoch + 1, metrics)  # Sees every epoch's row.
                    last = epoch + 1 == config.epochs or stop
                    evaluate = ctx.trial.evaluate
                    if last and evaluate is not None and not ctx.stopped_early:
                        # Logged with the last epoch, so they share its W&B step.
                        metrics |= {k: float(v) for k, v in evaluate(trial_state).items()}
                        scalars = {k: v for k, v in metrics.items() if "/" in k}
                        if not _finite(ctxs, i, scalars, "", step):
                            ended[i] = True
                            continue
                    if i == 0:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if "/" in k})
                    pictures = ctx.media(trial_state, epoch + 1, outputs[i])
                    if not last and (epoch + 1) % config.scatter_table_interval:
                        # Native W&B scatters every scatter_table_interval epochs and at the
                        # end (their PNGs every epoch): see the config field.
                        pictures = {k: v for k, v in pictures.items() if k != "scatters"}
                    ctx.log(epoch + 1, metrics, pictures)
                    if last:
                        # Written before the final checkpoint: a process killed between the
                        # two redoes the last epoch (identically) and writes it again.
                        summaries[i] = ctx.write_summary(metrics, trial_state)
                        ended[i] = True
                    ctx.save(step, trial_state, train_sums={})
                sums = [{} for _ in ctxs]
                if all(ended):
                    break
                ctxs[0].stop_if_signalled(step)
        return _results(ctxs, summaries)


def _keys(ctxs: list[RunContext], vectorized: bool) -> dict[str, jax.Array]:
    """The run keys the fused program takes; one per trial, stacked, when vectorized."""
    names = ("step", "data", "eval")
    if not vectorized:
        return {n: getattr(ctxs[0].keys, n) for n in names}
    return {n: jnp.stack([getattr(c.keys, n) for c in ctxs]) for n in names}


def _per_trial(tree: Any, count: int, vectorized: bool) -> list[Any]:
    """Splits host metrics with a leading trial axis into one tree per trial."""
    if not vectorized:
        return [tree]
    return [jax.tree.map(lambda v, i=i: v[i], tree) for i in range(count)]


def _trial_state(state: Any, index: int, vectorized: bool) -> Any:
    return state_lib.unstack(state, index) if vectorized else state


def _finite(ctxs: list[RunContext], i: int, metrics: Mapping[str, Any], prefix, step) -> bool:
    """Whether trial i's metrics are finite. A NaN ends a lone run (NonFiniteError); among
    vectorized trials it fails that trial alone, and the others go on."""
    try:
        check_finite(metrics, prefix, step)
    except NonFiniteError as e:
        if len(ctxs) == 1:
            raise
        ctxs[i].fail(e)
        return False
    return True


def _results(ctxs: list[RunContext], summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pairs = zip(ctxs, summaries, strict=True)
    return [{"failure": c.failure} if c.failure else s for c, s in pairs]


# A segment of iterations [start, start + length):
#   (state, start, length, should_stop) -> (state, metrics)
# with every metric an array of one value per iteration done. A segment that dispatches
# iteration by iteration polls should_stop() between them and may return early (fewer
# values); a fused segment runs whole.
SegmentFn = Callable[[Any, int, int, Callable[[], bool]], tuple[Any, Mapping[str, Any]]]


class IterationTrainer:
    """Iterations in segments that end at image points (every `image_interval`), evaluation
    points (every `eval_interval`, when the trial evaluates) and checkpoint points; every
    iteration's metrics come back with its segment and are logged afterwards, one W&B step
    per logged iteration, so per-iteration logging costs no per-iteration host round trip.
    """

    def __init__(
        self,
        total_steps: int,
        image_interval: int,
        log_interval: int,
        run_segment: SegmentFn,
        report_line: Callable[[int, Mapping[str, float]], str] | None = None,
        checkpoint_interval: int = 0,
        eval_interval: int = 0,
    ):
        self.total_steps = total_steps
        self.checkpoint_interval = checkpoint_interval
        self.image_interval = image_interval
        self.eval_interval = eval_interval
        self.log_interval = log_interval
        self.run_segment = run_segment
        self.report_line = report_line

    def _is_point(self, n: int, every: int) -> bool:
        return n == self.total_steps or bool(every) and n % every == 0

    def segments(self, start: int) -> list[tuple[int, int]]:
        """(start, length) segments from `start`: edges at image, evaluation and checkpoint
        points."""
        edges = {self.total_steps}
        for every in (self.image_interval, self.eval_interval, self.checkpoint_interval):
            if every:
                edges |= set(range(every, self.total_steps, every))
        edges = sorted(x for x in edges if x > start)
        out, a = [], start
        for b in edges:
            out.append((a, b - a))
            a = b
        return out

    def __call__(
        self, ctxs: list[RunContext], state: Any, vectorized: bool
    ) -> list[dict[str, Any]]:
        if vectorized:
            raise ValueError("iteration-trained runs are not vectorized")
        (ctx,) = ctxs
        step = int(state.step)
        last_metrics: dict[str, float] = {}
        last_eval: dict[str, float] = {}  # Goes into summary.json with the final row.
        summary: dict[str, Any] = {}
        with _bar(ctx, self.total_steps, step) as bar:
            for start, length in self.segments(step):
                state, seg = self.run_segment(
                    state, start, length, lambda: ctx.stop.signum is not None
                )
                seg = jax.device_get(seg)
                check_finite(seg, "train/", start + 1)
                # Fewer than `length` when a signal cut the segment short.
                length = len(next(iter(seg.values())))
                step = start + length
                bar.update(length)
                # Iteration i (1-based) is W&B step i; log every log_interval-th one.
                for i in range(length):
                    n = start + i + 1
                    row = {f"train/{k}": float(v[i]) for k, v in seg.items()}
                    if n % self.log_interval == 0 or n == step:
                        last_metrics = row
                        pictures, figures = None, {}
                        if n == step and self._is_point(n, self.image_interval):
                            pictures = ctx.media(state, n)
                        evaluate = ctx.trial.evaluate
                        if n == step and evaluate and self._is_point(n, self.eval_interval):
                            figures = {k: float(v) for k, v in evaluate(state).items()}
                            check_finite(figures, "", n)
                            last_eval = figures
                        ctx.log(n, {**row, **figures, "iteration": n}, pictures)
                        ctx.ask_early_stop(n, row)
                if self.report_line is not None:
                    line = self.report_line(step, last_metrics)
                    bar.set_postfix_str(line)
                    if step % self.image_interval == 0 or step == self.total_steps:
                        tqdm.write(line, file=sys.stderr)
                done = step == self.total_steps or ctx.stopped_early
                if done:
                    final = {**last_metrics, **last_eval, "iteration": step}
                    summary = ctx.write_summary(final, state)
                ctx.save(step, state)
                if done:
                    break
                ctx.stop_if_signalled(step)
        return [summary]
