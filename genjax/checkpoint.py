"""orbax checkpoints under WORKDIR/checkpoints: the whole train state plus a JSON record.

The record holds what an exact resume needs besides the arrays: the data position, the
running sums of the epoch's training metrics, the W&B run id, the config that defines the
run and the state's sha256. orbax writes each checkpoint to a temporary folder and renames it
when complete, so a process killed mid-save leaves the previous checkpoint as the latest one;
old checkpoints are renamed away before they are deleted, so a kill mid-delete leaves no
half-deleted step. A restored state must match its recorded digest: a damaged checkpoint is
moved to WORKDIR/checkpoints_damaged and the previous one is used.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from genjax.config import ConfigError

# Where orbax moves checkpoints it replaces or no longer keeps, emptied after every save.
DELETED = "deleted"
DAMAGED = "checkpoints_damaged"  # Beside checkpoints/: what failed its check, kept for a look.


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; names the folder and the way out."""


def tree_digest(tree: Any) -> str:
    """sha256 of a pytree's leaves (bytes, shapes, dtypes) in tree order: bitwise identity."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        leaf = np.asarray(leaf)
        h.update(f"{leaf.dtype}{leaf.shape}".encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def debugging() -> bool:
    """GENJAX_DEBUG=1: tracebacks and library error logs are shown, not just the one line."""
    return os.environ.get("GENJAX_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def _quiet(level: int = absl_logging.FATAL) -> Iterator[None]:
    """orbax logs each failing write thread's traceback; the CheckpointError says it once."""
    verbosity = absl_logging.get_verbosity()
    if not debugging():
        absl_logging.set_verbosity(level)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


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
                # A rename, then our rmtree: a kill while deleting never leaves a half step.
                todelete_subdir=DELETED,
            )
        self.read_only = read_only
        self._options = options
        self._open()
        if not read_only:
            self._empty_deleted()

    def _open(self) -> None:
        with _quiet(absl_logging.ERROR):  # A read-only manager warns that it is read-only.
            self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def _empty_deleted(self) -> None:
        shutil.rmtree(self.directory / DELETED, ignore_errors=True)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, record: Mapping[str, Any]) -> None:
        """Saves state and record as checkpoint `step` (replacing one of the same step); the
        record gets the state's digest, checked when it is restored."""
        record = {**record, "state_sha256": tree_digest(state)}
        try:
            with _quiet():
                if step in self._manager.all_steps():
                    self._manager.delete(step)
                self._manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
                    ),
                )
                self._manager.wait_until_finished()
            self._empty_deleted()
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
            with _quiet():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
                )
        except Exception as e:
            raise self._unreadable(step, e) from None
        return dict(restored.record)

    def newest_record(self) -> dict[str, Any] | None:
        """The record of the newest checkpoint whose record reads back (None: no checkpoint)."""
        for step in reversed(self.all_steps()):
            try:
                return self.read_record(step)
            except CheckpointError as e:
                print(f"{e}; using the checkpoint before it", file=sys.stderr)
        return None

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores the state into the structure of `target` (a freshly initialised state),
        checked against the digest its record holds."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            with _quiet():
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
                    ),
                )
        except Exception as e:
            raise self._unreadable(step, e) from None
        record = dict(restored.record)
        expected = record.get("state_sha256")  # Absent from checkpoints of older genjax.
        if expected is not None and tree_digest(restored.state) != expected:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} is damaged: its arrays do not match "
                "the digest recorded when it was saved"
            )
        return restored.state, record

    def restore_latest(
        self, target: Any, check: Callable[[dict[str, Any]], None] = lambda record: None
    ) -> tuple[Any, dict[str, Any]] | None:
        """The newest checkpoint that reads back intact, or None when there is none.

        `check` sees the newest readable record first and may refuse the workdir (a run of
        other settings). A checkpoint that fails to read or to match its digest is moved to
        WORKDIR/checkpoints_damaged (left in place when read-only), saying which and why, but
        only once an older one has restored intact: an error that every checkpoint meets
        (a state of another shape, a failing disk) moves nothing and is raised.
        """
        failed: list[tuple[int, CheckpointError]] = []
        checked = False
        for step in reversed(self.all_steps()):
            try:
                record = self.read_record(step)
                if not checked:
                    check(record)
                    checked = True
                restored = self.restore(target, step)
            except CheckpointError as e:
                failed.append((step, e))
                continue
            for bad, error in failed:
                self._set_aside(bad, error)
            return restored
        if failed:
            newest, error = failed[0]
            raise CheckpointError(
                f"no checkpoint in {self.directory} reads back intact (newest: {error}); "
                "nothing was moved. If they are damaged, delete "
                f"{self.directory.parent} or choose another --workdir to start afresh"
            )
        return None

    def _set_aside(self, step: int, error: CheckpointError) -> None:
        if self.read_only:  # Readers leave a live trainer's folder alone.
            print(f"{error}; using an earlier checkpoint", file=sys.stderr)
            return
        if jax.process_count() > 1:  # Several hosts would race to move it.
            raise CheckpointError(
                f"{error}; move {self.directory / str(step)} out of checkpoints/ to resume "
                "from the checkpoint before it"
            )
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.directory.parent / DAMAGED / f"{step}-{stamp}"
        target.parent.mkdir(exist_ok=True)
        (self.directory / str(step)).rename(target)
        self._manager.close()
        self._open()  # orbax caches the step list.
        print(f"{error}; moved it to {target} and resumed from an earlier one", file=sys.stderr)

    def _unreadable(self, step, e: Exception) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {step} in {self.directory} cannot be read ({_first_line(e)})"
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
