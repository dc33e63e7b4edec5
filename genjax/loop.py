"""What every experiment's host loop shares: workdir checks, restore or init, W&B, signals,
checkpoints, the NaN guard and summary.json. The loops themselves (epochs for the
autoencoders, iterations with image points for the GAN) are in genjax/trainers.py.
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
from typing import Any, Protocol

import jax
import numpy as np

from genjax import data, images
from genjax.checkpoint import Checkpoints, check_compatible
from genjax.config import BaseConfig, ConfigError
from genjax.wandb_logging import Run

# Pictures at a log point: {"images": {key: array or (array, caption)}, "scatters": {...}}.
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


def steps_per_epoch(config, num_train: int) -> int:
    """Full batches per pass over the training split (the remainder is dropped: static shapes)."""
    if config.batch_size > num_train:
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the training split "
            f"({num_train} examples); use a smaller batch"
        )
    full = num_train // config.batch_size
    cap = getattr(config, "steps_per_epoch", 0)  # Only epoch-trained experiments cap it.
    return min(full, cap) if cap else full


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


def check_finite(metrics: Mapping[str, np.ndarray], prefix: str, first_step: int) -> None:
    for name, values in metrics.items():
        values = np.atleast_1d(values)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = first_step + int(bad[0])
            raise NonFiniteError(
                f"{prefix}{name} is {values[bad[0]]} at step {step}; training stopped and the "
                "last good checkpoint is kept (lower --learning_rate, or check the data)"
            )


class Trainer(Protocol):
    """A host loop: how many steps make the run, and how to run them from a restored state."""

    total_steps: int

    def __call__(self, ctx: RunContext, state: Any) -> dict[str, Any]: ...


@dataclasses.dataclass
class RunContext:
    """Everything a trainer needs besides the state; its helpers keep the rules in one place."""

    config: BaseConfig
    family: Family
    dataset: data.Dataset
    keys: RunKeys
    wandb_run: Run
    workdir: Path
    checkpoints: Checkpoints
    record: dict[str, Any]  # The restored checkpoint's record ({} for a new run).
    stop: _SignalFlag

    @property
    def image_dir(self) -> Path:
        return self.workdir / "images"

    def save(self, step: int, state: Any, **extra: Any) -> None:
        """Checkpoints a state that passed the NaN guard, with what a resume needs."""
        self.checkpoints.save(
            step,
            state,
            {
                "step": step,
                "wandb_run_id": self.wandb_run.id,
                "experiment": self.family.name,
                "config": self.config.to_dict(),
                **extra,
            },
        )

    def stop_if_signalled(self, step: int) -> None:
        """After a checkpoint: a pending SIGTERM/SIGINT ends the run here."""
        if self.stop.signum is not None:
            raise _interrupted(self.stop.signum, step, self.checkpoints)

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any],
        pictures: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """One W&B step; pictures also go to WORKDIR/images/KEY.png (the latest of each)."""
        pictures = pictures or {}
        for key, array in pictures.get("images", {}).items():
            array = array[0] if isinstance(array, tuple) else array
            images.save_png(array, self.image_dir / f"{key}.png")
        self.wandb_run.log(
            step, metrics, images=pictures.get("images"), scatters=pictures.get("scatters")
        )

    def write_summary(self, metrics: Mapping[str, Any], state: Any) -> dict[str, Any]:
        """summary.json: final metrics under their W&B names, config, where the run is."""
        summary = {
            **metrics,
            "state_sha256": tree_digest(state),
            "config": self.config.to_dict(),
            "wandb_run": self.wandb_run.describe(),
            "data_source": self.dataset.source,
            "images": str(self.image_dir),
            "checkpoints": str(self.checkpoints.directory),
        }
        self.wandb_run.summary(dict(metrics) | {"state_sha256": summary["state_sha256"]})
        (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def run(
    config: BaseConfig,
    family: Family,
    dataset: data.Dataset,
    init_state: Callable[[jax.Array], Any],
    trainer: Trainer,
) -> dict[str, Any]:
    """Trains (or resumes) a run in its workdir; returns the summary written to summary.json."""
    workdir = workdir_for(config, family.name)
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
    if int(state.step) >= trainer.total_steps:
        summary_path = workdir / "summary.json"
        print(f"{workdir} is already complete at step {int(state.step)}: {summary_path}")
        checkpoints.close()
        return json.loads(summary_path.read_text()) if summary_path.exists() else {}

    wandb_run = Run(
        directory=workdir,
        config={**config.to_dict(), "experiment": family.name, "data_source": dataset.source},
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
            ctx = RunContext(
                config, family, dataset, keys, wandb_run, workdir, checkpoints, record or {}, stop
            )
            ctx.image_dir.mkdir(parents=True, exist_ok=True)
            summary = trainer(ctx, state)
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
