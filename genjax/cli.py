"""Entry-point plumbing: bad input becomes one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from genjax import sharding
from genjax.checkpoint import CheckpointError
from genjax.config import ConfigError
from genjax.data import DataError
from genjax.loop import TrainingStopped

USER_ERRORS = (ConfigError, DataError)


def main(run: Callable[[], object]) -> int:
    """Calls run(); expected failures print one line on stderr and return an exit status.

    Bad input (config, data) exits 2; a stopped run (NaN, a full disk) exits 1; a signal
    exits 128 + its number after the checkpoint is saved.
    """
    try:
        sharding.initialize()
        run()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # A second Ctrl-C: stop now; the last checkpoint stands.
        print("stopped: interrupted twice; the last complete checkpoint is kept", file=sys.stderr)
        return 130
    return 0
