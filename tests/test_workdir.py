"""One owner per workdir: a lock the kernel releases however its owner dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genjax.workdir import LOCK_NAME, WorkdirBusy, owned

ROOT = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from pathlib import Path
from genjax.workdir import owned
with owned(Path(sys.argv[1])):
    print("owned", flush=True)
    time.sleep(600)
"""


def test_a_second_owner_is_refused_naming_the_first(tmp_path):
    with owned(tmp_path):
        with pytest.raises(WorkdirBusy) as refused:
            with owned(tmp_path):
                pass
    message = str(refused.value)
    assert f"{tmp_path} is in use by process {os.getpid()}" in message
    assert "choose another --workdir" in message
    with owned(tmp_path):  # Released at the end of the first.
        pass


def test_the_lock_of_a_killed_owner_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "owned"
        with pytest.raises(WorkdirBusy, match=f"in use by process {holder.pid} "):
            with owned(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # Left behind by the kill: stale, not binding.
    start = time.monotonic()
    with owned(tmp_path):
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()
    assert time.monotonic() - start < 5


def test_a_filesystem_without_locks_is_named_as_such_not_as_busy(tmp_path, monkeypatch):
    import errno
    import fcntl

    from genjax import run
    from genjax.config import AutoencoderConfig, ConfigError

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match="cannot be locked .*file locks") as caught:
        with owned(tmp_path):
            pytest.fail("a lock that cannot be taken must not be held")
    assert not isinstance(caught.value, WorkdirBusy)
    # The run layer passes it on as it is: the advice is to move, not to wait.
    config = AutoencoderConfig(workdir=str(tmp_path / "run"), wandb_mode="disabled")
    with pytest.raises(ConfigError, match="cannot be locked") as caught:
        run._restore("autoencoder", config, None, (), None, contextlib.ExitStack())
    assert not isinstance(caught.value, WorkdirBusy)
