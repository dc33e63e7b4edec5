"""orbax checkpoints under WORKDIR/checkpoints: the whole train state plus a JSON record.

The record holds what an exact resume needs besides the arrays: the data position, the
running sums of the epoch's training metrics, the W&B run id and the config that defines the
run. orbax writes each checkpoint to a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from genjax.config import ConfigError


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; names the folder and the way out."""


class Checkpoints:
    """An orbax CheckpointManager for one workdir, saving synchronously."""

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 2, read_only=False):
        """read_only: for readers (sampling, evaluation) beside a possibly live trainer; they
        must not clean up the trainer's in-progress (temporary) checkpoint folder."""
        self.directory = Path(workdir) / "checkpoints"
        if read_only:
            # save_interval_steps=0: orbax warns that it sets it so for a read-only manager.
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, save_interval_steps=0
            )
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                # A save must be on disk before training goes on: a preemption right after
                # it then loses nothing. The states here save in well under a second.
                enable_async_checkpointing=False,
                # Half-written folders of a killed process are never picked up; remove them.
                cleanup_tmp_directories=True,
            )
        verbosity = absl_logging.get_verbosity()
        if read_only:  # orbax logs a warning that a read-only manager is read-only.
            absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        finally:
            absl_logging.set_verbosity(verbosity)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, record: Mapping[str, Any]) -> None:
        """Saves state and record as checkpoint `step` (replacing one of the same step)."""
        try:
            if step in self._manager.all_steps():
                self._manager.delete(step)
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(dict(record))
                ),
            )
            self._manager.wait_until_finished()
        except Exception as e:  # orbax reports a full disk as OSError or ValueError.
            latest = self.latest_step()
            reason = getattr(e, "strerror", None) or _first_line(e)
            raise CheckpointError(
                f"could not write the checkpoint of step {step} in {self.directory} "
                f"({reason}); the last complete checkpoint is step {latest}. "
                "Free disk space or choose another --workdir, then run the same command again"
            ) from None

    def read_record(self, step: int | None = None) -> dict[str, Any] | None:
        """The JSON record of a checkpoint (the latest by default), without its arrays."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise self._unreadable(step, e) from None
        return dict(restored.record)

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores the state into the structure of `target` (a freshly initialised state)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:
            raise self._unreadable(step, e) from None
        return restored.state, dict(restored.record)

    def _unreadable(self, step, e: Exception) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {step} in {self.directory} cannot be read ({_first_line(e)}); "
            f"delete that folder to fall back to an earlier checkpoint, or use another --workdir"
        )

    def close(self) -> None:
        self._manager.close()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def check_compatible(
    record: Mapping[str, Any],
    experiment: str,
    config: Mapping[str, Any],
    fields: Iterable[str],
    where: Path,
) -> None:
    """Refuses to resume when the experiment or a field that defines the run differs."""
    if record.get("experiment") != experiment:
        raise ConfigError(
            f"{where} holds a checkpoint of a {record.get('experiment')!r} run, not "
            f"{experiment!r}; use another --workdir"
        )
    saved = record.get("config", {})
    changed = [f for f in fields if f in saved and saved[f] != config.get(f)]
    if changed:
        diffs = ", ".join(f"--{f}={saved[f]} (asked: {config.get(f)})" for f in changed)
        raise ConfigError(
            f"{where} holds a checkpoint of a different run: {diffs}. These settings define "
            "the run and cannot change on resume; use another --workdir, or delete "
            f"{where} to start afresh"
        )
