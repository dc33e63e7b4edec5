"""Writes docs/config.md: every entry point's --help, so the reference never goes stale.

python -m experiments.config_reference           # writes it
python -m experiments.config_reference --check   # exits 2 if it is stale (tests do this)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from pathlib import Path

from benchmarks.run import BenchmarkConfig
from experiments import registry
from experiments.evaluate import EvaluateConfig
from experiments.leaderboard import LeaderboardConfig
from experiments.sweep import RunnerConfig
from experiments.vae_sample import SampleConfig
from genjax import cli
from genjax.config import ConfigError

PROG = "python -m experiments.config_reference"
PATH = Path(__file__).resolve().parents[1] / "docs" / "config.md"
ENTRY_POINTS = [
    *((f"experiments.{name}", m.Config) for name, m in registry.EXPERIMENTS.items()),
    ("experiments.vae_sample", SampleConfig),
    ("experiments.evaluate", EvaluateConfig),
    ("experiments.leaderboard", LeaderboardConfig),
    ("experiments.sweep FILE.yaml", RunnerConfig),
    ("benchmarks.run", BenchmarkConfig),
]


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """Writes docs/config.md from every entry point's --help."""

    check: bool = False  # Only compare: an error if docs/config.md is not current.

    def validate(self) -> None:
        pass


def help_text(module: str, config_cls) -> str:
    """What `python -m MODULE --help` prints, at a fixed width (the same on every terminal)."""
    out, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli.parse(config_cls, ["--help"], prog=f"python -m {module}")
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(line.rstrip() for line in out.getvalue().strip().splitlines())


def reference() -> str:
    parts = [
        "# Config reference",
        "",
        "Every setting of every entry point, as its `--help` prints it (written by",
        "`python -m experiments.config_reference`). Give a setting as `--field=value` or",
        "`--field value`; a boolean also as a bare `--field`. `experiments.sweep` passes every",
        "flag it does not know to its trials.",
    ]
    for module, config_cls in ENTRY_POINTS:
        parts += ["", f"## `python -m {module}`", "", "```", help_text(module, config_cls), "```"]
    return "\n".join(parts) + "\n"


def write(config: ReferenceConfig) -> None:
    text = reference()
    if config.check:
        if not PATH.exists() or PATH.read_text() != text:
            raise ConfigError(f"{PATH} is stale: run {PROG}")
        print(f"{PATH} is current")
        return
    PATH.write_text(text)
    print(f"written to {PATH}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: write(cli.parse(ReferenceConfig, argv, prog=PROG)))


if __name__ == "__main__":
    cli.exit_with(main())
