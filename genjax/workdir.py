"""A run's folder: where it is, whether it can be written, and who owns it.

One process owns a workdir while it trains: a second command on the same folder is refused
at once. Ownership is an exclusive `flock` on WORKDIR/.lock, which the kernel releases when
the owner dies however it dies (`kill -9` included), so a stale lock is simply taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from genjax.config import BaseConfig, ConfigError
from genjax.wandb_logging import agent_run

LOCK_NAME = ".lock"
RUN_FILE = "run.json"  # The run's identity from its first start: experiment, W&B run id.


class WorkdirBusy(ConfigError):
    """Another live process owns the workdir."""


def workdir_for(config: BaseConfig, experiment: str) -> Path:
    """--workdir, else runs/<experiment>; a `wandb agent` trial gets its own folder, so the
    trials of a sweep never share (and refuse) each other's checkpoints."""
    if config.workdir:
        return Path(config.workdir).resolve()
    agent = agent_run()
    if agent is not None:
        return Path("runs", "sweeps", *agent).resolve()
    return Path("runs", experiment).resolve()


def read_run_file(workdir: Path) -> dict:
    """WORKDIR/run.json ({} before a run's first start)."""
    path = workdir / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_run_file(workdir: Path, **fields) -> None:
    """Written once W&B has given the run its id, before any training: a run killed before
    its first checkpoint continues the same W&B run."""
    tmp = workdir / f"{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(fields, indent=2) + "\n")
    tmp.replace(workdir / RUN_FILE)


def check_workdir(workdir: Path, min_free_mb: int) -> None:
    """Fails at start, not after hours, when the workdir cannot be written or the disk is full."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # Per process: the hosts of one run may share the workdir (a network disk).
        probe = workdir / f".write-test-{os.getpid()}"
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


@contextlib.contextmanager
def owned(workdir: Path) -> Iterator[None]:
    """Holds the workdir for this process, or raises WorkdirBusy naming the live owner.

    The lock file is never deleted: unlinking it would let two processes lock two files.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusy(
                f"{workdir} is in use by {_describe_owner(fd)}; wait for it to end, "
                "or choose another --workdir"
            ) from None
        except OSError as e:  # A filesystem without locks.
            raise ConfigError(
                f"--workdir={workdir} cannot be locked ({e.strerror or e}); choose a folder on "
                "a filesystem with file locks"
            ) from None
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # Releases the lock.


def _describe_owner(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # Being rewritten by its new owner this instant.
        owner = {}
    if not owner:
        return "another process"
    return (
        f"process {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')}: "
        f"{owner.get('command')})"
    )
