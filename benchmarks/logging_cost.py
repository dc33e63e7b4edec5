"""--logging_cost: an experiment run as a user runs it, W&B offline, and the share of its wall
time that making pictures and logging took (summary.json's time/logging_share, which counts
the W&B thread's seconds in full although it runs beside training: an upper bound)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def case(name: str, bench) -> dict:
    """The experiment at its default intervals, sample evaluation off (the autoencoder's
    end-of-run reconstruction error still runs); the DCGAN for 200 iterations."""
    length = {"dcgan": ["--iterations=200"]}.get(name, [])
    extra = bench.logging_flags.split()
    if any(f.startswith(("--epochs=", "--iterations=")) for f in extra):
        length = []
    evaluation = ["--eval_samples=0"]
    flags = [*length, *evaluation, *extra]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            sys.executable,
            "-m",
            f"experiments.{name}",
            *flags,
            f"--workdir={tmp}/run",
            "--wandb_mode=offline",
            "--progress=false",
            f"--dataset={bench.dataset}",
            f"--data_dir={bench.data_dir}",
            f"--data_source={bench.data_source}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} failed:\n{done.stderr[-3000:]}")
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    return {
        "model": name,
        "command": " ".join([name, *flags]),
        "wall_s": summary["time/wall_s"],
        "logging_share": summary["time/logging_share"],
    }
