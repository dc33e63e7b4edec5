"""Evaluate a finished (or interrupted) run's latest checkpoint without retraining.

    python -m experiments.evaluate --workdir=runs/dcgan [--eval_samples=N] [--feature_net=DIR]

Computes the figures the run's experiment reports at its end, from the config stored with
the checkpoint: eval/fid, eval/precision, eval/recall (VAE, DCGAN), the likelihood bounds
(Bernoulli VAE on binarized data), eval/recon_mse and eval/recon_psnr (autoencoder), and for
a feature network the same figures of real training images (the floor of eval/fid). With the
run's own settings they equal its summary.json's figures for the same checkpoint. Prints
them and writes them to --out (default WORKDIR/evaluation.json); the run is not changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from experiments import autoencoder, classifier, dcgan, vae
from genjax import cli, sharding
from genjax.checkpoint import Checkpoints
from genjax.config import ConfigError, parse_flags

EXPERIMENTS = {
    e.name: e
    for e in (autoencoder.EXPERIMENT, vae.EXPERIMENT, dcgan.EXPERIMENT, classifier.EXPERIMENT)
}


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    workdir: str = ""  # The run's folder (its checkpoints/ and summary.json).
    eval_samples: int = -1  # Generated and test images for FID/precision/recall; -1 = the run's.
    feature_net: str = ""  # The feature network's workdir; "" = the run's.
    out: str = ""  # "" = WORKDIR/evaluation.json
    progress: bool = True  # A progress bar if the feature network must be trained first.

    def validate(self) -> None:
        if not self.workdir:
            raise ConfigError("--workdir is required: the folder of a finished run")
        if self.out and not self.out.lower().endswith(".json"):
            raise ConfigError(f"--out={self.out}: must name a .json file")


def _experiment_of(workdir: Path):
    if not (workdir / "checkpoints").is_dir():
        raise ConfigError(f"--workdir={workdir} holds no checkpoints/: not a genjax run folder")
    checkpoints = Checkpoints(workdir, read_only=True)  # A trainer may still be writing.
    try:
        record = checkpoints.newest_record()
    finally:
        checkpoints.close()
    if record is None:
        raise ConfigError(f"--workdir={workdir} holds no complete checkpoint yet")
    name = record.get("experiment")
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"--workdir={workdir} holds a {name!r} run; experiments.evaluate evaluates "
            f"{', '.join(sorted(EXPERIMENTS))} runs"
        )
    return EXPERIMENTS[name]


def evaluate(config: EvaluateConfig) -> dict:
    workdir = Path(config.workdir).resolve()
    experiment = _experiment_of(workdir)
    out = Path(config.out) if config.out else workdir / "evaluation.json"
    # Checked on every process before anything is computed (only the first one writes).
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise ConfigError(f"--out={out}: cannot write there ({out.parent} is no writable folder)")
    run_config, state, dataset = experiment.restore(workdir)
    overrides = {"progress": config.progress}
    for name, unset in (("eval_samples", -1), ("feature_net", "")):
        value = getattr(config, name)
        if value == unset:
            continue
        if not hasattr(run_config, name):
            raise ConfigError(f"--{name}: {experiment.name} runs have no samples to evaluate")
        overrides[name] = value
    run_config = dataclasses.replace(run_config, **overrides)
    run_config.validate()
    trial = experiment.trial(run_config, dataset, None)
    if trial.evaluate is None:
        raise ConfigError(
            f"this {experiment.name} run's settings report no evaluation figures "
            "(for a VAE or DCGAN: --eval_samples=10000)"
        )
    if trial.prepare is not None:
        trial.prepare()
    figures = {k: float(v) for k, v in trial.evaluate(state).items()}
    result = {
        **figures,
        "step": int(state.step),
        "workdir": str(workdir),
        "experiment": experiment.name,
        "config": run_config.to_dict(),
    }
    if not sharding.is_main_process():  # Every host computed the same figures.
        return result
    try:
        out.write_text(json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise ConfigError(f"--out={out}: cannot write there ({e.strerror or e})") from None
    print(f"{experiment.name} run {workdir} at step {result['step']}:")
    for key, value in figures.items():
        print(f"  {key:28s} {value:.6g}")
    print(f"written to {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: evaluate(parse_flags(EvaluateConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
