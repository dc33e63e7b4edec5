"""Entry-point plumbing: a config's command line, and bad input as one clear line.

    config = cli.parse(AutoencoderConfig, sys.argv[1:])   # --help lists every field

Flags are parsed by tyro from the config dataclass (the comment after each field is its help
line), as `--field=value` or `--field value`, the forms `wandb agent` passes. Its errors are
turned into one line; validation that no parser does (a flag given twice, impossible values)
is genjax's. GENJAX_DEBUG=1 shows the traceback of an error, and what libraries print as they
fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import tyro
from absl import logging as absl_logging

from genjax import sharding
from genjax.checkpoint import CheckpointError, debugging
from genjax.config import ConfigError
from genjax.data import DataError
from genjax.run import TrainingStopped

USER_ERRORS = (ConfigError, DataError)
C = TypeVar("C")

# How flag text becomes a value where tyro's own rules are not what genjax promises:
# booleans as true/false/yes/no/1/0 (any case), integers also written as integral floats
# (`wandb agent` writes 32.0 for some int parameters), floats only finite.
_RULES = tyro.constructors.ConstructorRegistry()


def _boolean(args: list[str]) -> bool:
    text = args[0].lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {args[0]!r}")


def _integer(args: list[str]) -> int:
    try:
        return int(args[0])
    except ValueError:
        pass
    try:
        number = float(args[0])
    except ValueError:
        number = math.nan
    if number.is_integer():
        return int(number)
    raise ValueError(f"expected an integer, not {args[0]!r}")


def _finite(args: list[str]) -> float:
    try:
        number = float(args[0])
    except ValueError:
        raise ValueError(f"expected a number, not {args[0]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, not {args[0]!r}")
    return number


@_RULES.primitive_rule
def _rule(info: tyro.constructors.PrimitiveTypeInfo):
    parse = {bool: (_boolean, "{true,false}"), int: (_integer, "INT"), float: (_finite, "FLOAT")}
    if info.type not in parse:
        return None
    from_text, metavar = parse[info.type]
    return tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar,
        instance_from_str=from_text,
        is_instance=lambda x, t=info.type: type(x) is t,
        str_from_instance=lambda x: [str(x).lower() if isinstance(x, bool) else str(x)],
    )


def parse(
    config_cls: type[C], argv: Sequence[str], prog: str | None = None, validate: bool = True
) -> C:
    """A validated config from `--field=value` flags; `--help` prints them all and exits 0.
    validate=False converts the flags' types only (the other fields may not fit them yet)."""
    booleans = {f.name for f in dataclasses.fields(config_cls) if f.type in (bool, "bool")}
    seen, args = set(), list(argv)
    for i, arg in enumerate(args):
        name, has_value = "", False
        if arg.startswith("--"):
            name, equals, _ = arg[2:].partition("=")
            name, has_value = name.replace("-", "_"), bool(equals)
        if name and name in seen:
            raise ConfigError(f"--{name} is given twice")
        seen.add(name)
        alone = i + 1 == len(args) or args[i + 1].startswith("--")
        if name in booleans and not has_value and alone:
            args[i] = f"--{name}=true"  # A bare boolean flag turns it on.
    errors = io.StringIO()
    try:
        with _RULES, contextlib.redirect_stderr(errors):
            config = tyro.cli(
                config_cls,
                args=args,
                prog=prog,
                use_underscores=True,
                config=(tyro.conf.FlagConversionOff,),
            )
    except SystemExit as e:
        if not e.code:  # --help, printed.
            raise
        raise ConfigError(_one_line(errors.getvalue())) from None
    if validate:
        config.validate()
    return config


def _one_line(text: str) -> str:
    """tyro's boxed error as one line: the message under its title, and the flags it suggests
    ("╭─ Value error ─╮ / │ Error parsing --x: ... │ / │ ──── │ / ..."; without a terminal,
    the title, a rule, the message, a rule, ...)."""
    lines = [line.strip().strip("│╭╮╰╯").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]

    def rule(line):
        return set(line) <= set("─━- ")

    message, started = [], False
    for line in lines[1:]:  # The first is the title.
        if rule(line):
            if started:
                break
            continue
        started = True
        message.append(line)
    one = " ".join(message) or " ".join(lines)
    hint = next((i for i, line in enumerate(lines) if line.startswith("Perhaps you meant")), None)
    if hint is not None:
        suggested = re.findall(r"^(--\w[\w-]*)", "\n".join(lines[hint + 1 :]), re.M)
        one += f" (did you mean {', '.join(dict.fromkeys(suggested))}?)"
    if one.startswith("Unrecognized options: ") and not one.startswith("Unrecognized options: -"):
        one += "; every setting is --field=value"
    return one


def main(run: Callable[[], object]) -> int:
    """Calls run(); expected failures print one line on stderr and return an exit status.

    Bad input (config, data) exits 2; a stopped run (NaN, a full disk) exits 1; a signal
    exits 128 + its number after the checkpoint is saved.
    """
    if not debugging():
        sys.unraisablehook = _quiet_unraisable
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


def exit_with(code: int) -> NoReturn:
    """sys.exit for an entry point run as a program. Once its last line is out, the process
    only shuts down: a late Ctrl-C then, or (after a failure) a library thread's error on
    its way out, would print tracebacks under that line (GENJAX_DEBUG=1 keeps them)."""
    if not debugging():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if code:
            sys.stderr.flush()
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    sys.exit(code)


# What orbax's writer threads raise where no one catches it when a full disk or a second
# Ctrl-C cuts them short: dozens of tracebacks after the one line that matters.
_ORBAX_NOISE = ("Event loop is closed", "cannot schedule new futures after interpreter shutdown")


def _quiet_unraisable(unraisable) -> None:
    if not any(n in str(unraisable.exc_value) for n in _ORBAX_NOISE):
        sys.__unraisablehook__(unraisable)


def _fail(line: str, code: int) -> int:
    if debugging():
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code
