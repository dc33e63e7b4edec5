"""The host loop every experiment shares: restore or init, fused steps, evaluate, log, save.

A model family brings its state, its jitted steps, its pixel range and what it draws at each
epoch's end; this loop owns the order of work, checkpoints and resume, the NaN guard,
signals, the progress bar, W&B and summary.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genjax import data, images
from genjax.checkpoint import Checkpoints, check_compatible
from genjax.config import BaseConfig, ConfigError
from genjax.steps import fused
from genjax.wandb_logging import Run

# Epoch-end pictures: {"images": {key: array or (array, caption)}, "scatters": {key: Scatter}}.
MediaFn = Callable[[Any, int], Mapping[str, Mapping[str, Any]]]
# Costly end-of-run figures (likelihood bounds, FID): state -> {W&B key: float}.
FinalMetricsFn = Callable[[Any], Mapping[str, float]]


class TrainingStopped(RuntimeError):
    """Training ended early; `exit_code` is what the process should exit with."""

    exit_code = 1


class NonFiniteError(TrainingStopped):
    """A NaN or Inf in the metrics: the state is bad and is never checkpointed."""


class Interrupted(TrainingStopped):
    """SIGTERM or SIGINT: a checkpoint was saved and the same command resumes."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


# Config fields that define any run: a checkpoint made under other values is refused, since
# resuming it would not continue the same run (data order, step grid, optimizer).
BASE_IDENTITY_FIELDS = (
    "dataset",
    "batch_size",
    "seed",
    "steps_per_epoch",
    "steps_per_dispatch",
    "learning_rate",
)


@dataclasses.dataclass(frozen=True)
class Family:
    """What a model family plugs into the loop (all static: hashable jitted functions)."""

    name: str
    train_step: Callable
    eval_step: Callable
    pixel_range: tuple[float, float]
    # Config fields that define the run (the base ones and the model's shape).
    identity_fields: tuple[str, ...] = BASE_IDENTITY_FIELDS


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """Named random streams, each a pure function of the run seed."""

    init: jax.Array
    step: jax.Array  # Folded with state.step inside every train step.
    data: jax.Array  # Folded with the epoch number for the shuffle.
    eval: jax.Array  # Fixed, so validation numbers are comparable across epochs.
    sample: jax.Array  # For pictures (generation), fixed across epochs.
    evaluation: jax.Array  # For end-of-run figures (likelihood bounds, FID samples).


def run_keys(seed: int) -> RunKeys:
    root = jax.random.key(seed)
    names = [f.name for f in dataclasses.fields(RunKeys)]
    return RunKeys(*(jax.random.fold_in(root, i) for i in range(len(names))))


def workdir_for(config: BaseConfig, experiment: str) -> Path:
    return Path(config.workdir or os.path.join("runs", experiment)).resolve()


def check_workdir(workdir: Path, min_free_mb: int) -> None:
    """Fails at start, not after hours, when the workdir cannot be written or the disk is full."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-test"
        probe.write_bytes(b"genjax")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--workdir={workdir} cannot be written ({e.strerror or e}); "
            "choose a folder you can write to"
        ) from None
    free_mb = shutil.disk_usage(workdir).free // 2**20
    if free_mb < min_free_mb:
        raise ConfigError(
            f"--workdir={workdir} has {free_mb} MB free, less than --min_free_disk_mb="
            f"{min_free_mb}; free some space or choose a workdir on another disk"
        )


def steps_per_epoch(config: BaseConfig, num_train: int) -> int:
    """Full batches per pass over the training split (the remainder is dropped: static shapes)."""
    if config.batch_size > num_train:
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the training split "
            f"({num_train} examples); use a smaller batch"
        )
    full = num_train // config.batch_size
    return min(full, config.steps_per_epoch) if config.steps_per_epoch else full


def tree_digest(tree: Any) -> str:
    """sha256 of a pytree's leaves (bytes, shapes, dtypes) in tree order: bitwise identity."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        leaf = np.asarray(leaf)
        h.update(f"{leaf.dtype}{leaf.shape}".encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


class _SignalFlag:
    """Turns SIGTERM/SIGINT into a flag the loop reads between dispatches; restores on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals alone.
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # A second signal: stop at once.
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _check_finite(metrics: Mapping[str, np.ndarray], prefix: str, first_step: int) -> None:
    for name, values in metrics.items():
        values = np.atleast_1d(values)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = first_step + int(bad[0])
            raise NonFiniteError(
                f"{prefix}{name} is {values[bad[0]]} at step {step}; training stopped and the "
                "last good checkpoint is kept (lower --learning_rate, or check the data)"
            )


def run(
    config: BaseConfig,
    family: Family,
    dataset: data.Dataset,
    init_state: Callable[[jax.Array], Any],
    media: MediaFn,
    final_metrics: FinalMetricsFn | None = None,
) -> dict[str, Any]:
    """Trains (or resumes) a run in its workdir; returns the summary written to summary.json."""
    workdir = workdir_for(config, family.name)
    per_epoch = steps_per_epoch(config, len(dataset.train))
    check_workdir(workdir, config.min_free_disk_mb)
    checkpoints = Checkpoints(workdir, config.max_to_keep)
    record = checkpoints.read_record()
    if record is not None:
        check_compatible(record, family.name, config.to_dict(), family.identity_fields, workdir)

    keys = run_keys(config.seed)
    state = init_state(keys.init)
    if record is not None:
        state, record = checkpoints.restore(state)
        print(f"resuming {workdir} from step {int(state.step)}", file=sys.stderr)
    total = config.epochs * per_epoch
    if int(state.step) >= total:
        summary_path = workdir / "summary.json"
        print(f"{workdir} is already complete at step {int(state.step)}: {summary_path}")
        checkpoints.close()
        return json.loads(summary_path.read_text()) if summary_path.exists() else {}

    wandb_run = Run(
        directory=workdir,
        config={
            **config.to_dict(),
            "experiment": family.name,
            "data_source": dataset.source,
        },
        mode=config.wandb_mode,
        project=config.wandb_project,
        entity=config.wandb_entity,
        name=config.wandb_name,
        job_type=family.name,
        init_timeout=config.wandb_init_timeout,
        run_id=(record or {}).get("wandb_run_id", ""),
    )
    try:
        with _SignalFlag() as stop:
            summary = _train(
                config,
                family,
                state,
                dataset,
                keys,
                wandb_run,
                workdir,
                media,
                checkpoints,
                record,
                per_epoch,
                stop,
                final_metrics,
            )
    except Interrupted as e:
        wandb_run.mark_preempting()
        wandb_run.finish(exit_code=e.exit_code)
        raise
    except BaseException as e:
        wandb_run.summary({"failure": f"{type(e).__name__}: {e}"})
        wandb_run.finish(exit_code=1)
        raise
    finally:
        checkpoints.close()
    wandb_run.finish()
    print(final_message(summary, workdir))
    return summary


def _train(
    config,
    family,
    state,
    dataset,
    keys,
    wandb_run,
    workdir,
    media,
    checkpoints,
    record,
    per_epoch,
    stop,
    final_metrics,
) -> dict[str, Any]:
    train_split = data.to_device(dataset.train)
    test_split = data.to_device(dataset.test)
    image_dir = workdir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    step = int(state.step)
    start_epoch, start_in_epoch = divmod(step, per_epoch)
    # Running sums of the epoch's per-step training metrics: float64 on the host, summed
    # chunk by chunk, and checkpointed, so a resumed epoch reports the same mean.
    sums: dict[str, float] = dict(record.get("train_sums", {})) if start_in_epoch else {}
    metrics: dict[str, float] = {}

    def save(epoch_done: bool) -> None:
        checkpoints.save(
            step,
            state,
            {
                "step": step,
                "epoch": step // per_epoch,
                "step_in_epoch": step % per_epoch,
                "train_sums": {} if epoch_done else sums,
                "wandb_run_id": wandb_run.id,
                "experiment": family.name,
                "config": config.to_dict(),
            },
        )

    bar = tqdm(
        total=config.epochs * per_epoch,
        initial=step,
        unit="step",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        for epoch in range(start_epoch, config.epochs):
            bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
            for start, length in fused.chunks(per_epoch, config.steps_per_dispatch):
                if epoch == start_epoch and start < start_in_epoch:
                    # Done before the checkpoint this run resumed from, which lies on this
                    # grid (steps_per_dispatch is an identity field, so it cannot change).
                    continue
                state, chunk = fused.train_steps(
                    state,
                    train_split.images,
                    train_split.labels,
                    keys.step,
                    keys.data,
                    jnp.int32(epoch),
                    jnp.int32(start),
                    train_step=family.train_step,
                    num_steps=length,
                    batch_size=config.batch_size,
                    pixel_range=family.pixel_range,
                )
                chunk = jax.device_get(chunk)
                _check_finite(chunk, "train/", step + 1)
                for k, v in chunk.items():
                    sums[k] = sums.get(k, 0.0) + float(np.sum(v, dtype=np.float64))
                previous, step = step, step + length
                bar.update(length)
                if step % per_epoch == 0:
                    continue  # The epoch's end checkpoints below, after evaluation.
                # Mid-epoch checkpoints fall on the dispatch grid: the first dispatch end at
                # or after each multiple of checkpoint_interval.
                interval = config.checkpoint_interval
                if stop.signum is not None or (
                    interval and step // interval > previous // interval
                ):
                    save(epoch_done=False)
                if stop.signum is not None:
                    raise _interrupted(stop.signum, step, checkpoints)
            train_metrics = {k: v / per_epoch for k, v in sums.items()}
            sums = {}
            val_metrics = jax.device_get(
                fused.evaluate(
                    state,
                    test_split.images,
                    test_split.labels,
                    keys.eval,
                    eval_step=family.eval_step,
                    batch_size=min(config.eval_batch_size, len(test_split)),
                    pixel_range=family.pixel_range,
                )
            )
            _check_finite(val_metrics, "val/", step)
            metrics = {f"train/{k}": v for k, v in train_metrics.items()}
            metrics |= {f"val/{k}": float(v) for k, v in val_metrics.items()}
            metrics |= {"epoch": epoch + 1, "step": step}
            last = epoch + 1 == config.epochs
            if last and final_metrics is not None:
                # Logged with the last epoch, so they share its W&B step.
                metrics |= {k: float(v) for k, v in final_metrics(state).items()}
                _check_finite({k: v for k, v in metrics.items() if "/" in k}, "", step)
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if "/" in k})
            pictures = media(state, epoch + 1)
            for key, array in pictures.get("images", {}).items():
                array = array[0] if isinstance(array, tuple) else array
                images.save_png(array, image_dir / f"{key}.png")
            wandb_run.log(
                epoch + 1,
                metrics,
                images=pictures.get("images"),
                scatters=pictures.get("scatters"),
            )
            if last:
                # Written before the final checkpoint: a process killed between the two
                # redoes the last epoch (identically) and writes it again, never neither.
                summary = {
                    **metrics,
                    "params_sha256": tree_digest(state.params),
                    "config": config.to_dict(),
                    "wandb_run": wandb_run.describe(),
                    "data_source": dataset.source,
                    "images": str(image_dir),
                    "checkpoints": str(checkpoints.directory),
                }
                wandb_run.summary(
                    {k: v for k, v in metrics.items()} | {"params_sha256": summary["params_sha256"]}
                )
                (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            # Every epoch end is checkpointed: it is cheap next to an epoch, and it is where
            # the epoch's metrics are complete.
            save(epoch_done=True)
            if stop.signum is not None and not last:
                raise _interrupted(stop.signum, step, checkpoints)
    return summary


def _interrupted(signum: int, step: int, checkpoints: Checkpoints) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(
        f"{name} received: stopped at step {step} with a checkpoint in "
        f"{checkpoints.directory}; run the same command again to resume",
        signum,
    )


def final_message(summary: Mapping[str, Any], workdir: Path) -> str:
    """Tells the user where everything is."""
    wb = summary["wandb_run"]
    lines = [f"done: {json.dumps({k: v for k, v in summary.items() if '/' in k})}"]
    if wb["mode"] == "disabled":
        lines.append("W&B run:      disabled")
    else:
        lines.append(f"W&B run:      {wb.get('url') or wb['dir']} ({wb['mode']})")
        if "sync_command" in wb:
            lines.append(f"  upload it:  {wb['sync_command']}")
        lines.append(f"  its media:  {Path(wb['dir']) / 'files' / 'media'}")
    lines.append(f"images:       {summary['images']}")
    lines.append(f"checkpoints:  {summary['checkpoints']}")
    lines.append(f"summary.json: {workdir / 'summary.json'}")
    return "\n".join(lines)
