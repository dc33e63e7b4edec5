"""Entry-point plumbing: bad input becomes one clear line and a non-zero exit, no traceback.

GENJAX_DEBUG=1 shows the traceback of such an error, and what libraries print as they fail.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from absl import logging as absl_logging

from genjax import sharding
from genjax.checkpoint import CheckpointError, debugging
from genjax.config import ConfigError
from genjax.data import DataError
from genjax.loop import TrainingStopped

USER_ERRORS = (ConfigError, DataError)


def main(run: Callable[[], object]) -> int:
    """Calls run(); expected failures print one line on stderr and return an exit status.

    Bad input (config, data) exits 2; a stopped run (NaN, a full disk) exits 1; a signal
    exits 128 + its number after the checkpoint is saved.
    """
    if not debugging():
        # Exceptions Python already ignores: orbax's writer threads, cut short by a full
        # disk or a second Ctrl-C, print dozens of them ("Event loop is closed").
        sys.unraisablehook = lambda unraisable: None
    try:
        sharding.initialize()
        run()
    except USER_ERRORS as e:
        return _fail(f"error: {e}", 2)
    except CheckpointError as e:
        return _fail(f"error: {e}", 1)
    except TrainingStopped as e:
        return _fail(f"stopped: {e}", e.exit_code)
    except KeyboardInterrupt:  # A second Ctrl-C: stop now; the last checkpoint stands.
        if not debugging():  # orbax's threads, stopped mid-save, log as Python exits.
            absl_logging.set_verbosity(absl_logging.FATAL)
        return _fail("stopped: interrupted twice; the last complete checkpoint is kept", 130)
    return 0


def _fail(line: str, code: int) -> int:
    if debugging():
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code
