"""Entry-point plumbing: bad input becomes one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from genjax.config import ConfigError
from genjax.data import DataError

USER_ERRORS = (ConfigError, DataError)


def main(run: Callable[[], object]) -> int:
    """Calls run(); a user error prints `error: ...` on stderr and returns exit status 2."""
    try:
        run()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
