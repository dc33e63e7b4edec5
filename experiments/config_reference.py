"""Writes docs/config.md: every entry point's --help, so the reference never goes stale.

python -m experiments.config_reference        # tests/test_docs.py checks it is current
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from benchmarks.run import BenchmarkConfig
from experiments import registry
from experiments.evaluate import EvaluateConfig
from experiments.sweep import RunnerConfig
from experiments.vae_sample import SampleConfig
from genjax import cli

PATH = Path(__file__).resolve().parents[1] / "docs" / "config.md"
ENTRY_POINTS = [
    *((f"experiments.{name}", m.Config) for name, m in registry.EXPERIMENTS.items()),
    ("experiments.vae_sample", SampleConfig),
    ("experiments.evaluate", EvaluateConfig),
    ("experiments.sweep FILE.yaml", RunnerConfig),
    ("benchmarks.run", BenchmarkConfig),
]


def help_text(module: str, config_cls) -> str:
    """What `python -m MODULE --help` prints, at a fixed width."""
    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.parse(config_cls, ["--help"], prog=f"python -m {module}")
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


def main() -> int:
    PATH.write_text(reference())
    print(f"written to {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
