"""Evaluate a finished (or interrupted) run's latest checkpoint without retraining.

    python -m experiments.evaluate --workdir=runs/dcgan [--eval_samples=N] [--feature_net=DIR]

Computes the figures the run's experiment reports at its end, from the config stored with
the checkpoint: eval/fid, eval/precision, eval/recall (every generator, the autoencoder's
Gaussian over its codes included) with the feature network's test accuracy and digest
(eval/feature_net_sha256), the likelihood bounds (Bernoulli VAE on binarized data),
eval/recon_mse and eval/recon_psnr (autoencoder), and for a feature network the same figures
of real training images (the floor of eval/fid). With the run's own settings they equal its
summary.json's figures for the same checkpoint. Prints them and writes them to --out
(default WORKDIR/evaluation.json); the run is not changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from experiments import registry
from genjax import cli, sharding
from genjax.config import ConfigError
from genjax.evaluation import feature_net


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Figures of a finished (or interrupted) run's latest checkpoint, without retraining."""

    workdir: str = ""  # The run's folder (its checkpoints/ and summary.json).
    eval_samples: int = -1  # Generated and test images for FID/precision/recall; -1 = the run's.
    feature_net: str = ""  # The feature network's folder; "" = the run's.
    out: str = ""  # Where the figures are written; "" = WORKDIR/evaluation.json.
    progress: bool = True  # A progress bar if the feature network must be trained first.

    def validate(self) -> None:
        if not self.workdir:
            raise ConfigError("--workdir is required: the folder of a finished run")
        if self.out and not self.out.lower().endswith(".json"):
            raise ConfigError(f"--out={self.out}: must name a .json file")


def evaluate(config: EvaluateConfig) -> dict:
    workdir = Path(config.workdir).resolve()
    out = Path(config.out) if config.out else workdir / "evaluation.json"
    experiment, run_config, state = registry.restore(workdir)  # First: is it a run at all?
    # Checked on every process before anything is computed (only the first one writes).
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise ConfigError(f"--out={out}: cannot write there ({out.parent} is no writable folder)")
    overrides = {"progress": config.progress}
    for name, unset in (("eval_samples", -1), ("feature_net", "")):
        value = getattr(config, name)
        if value == unset:
            continue
        if not hasattr(run_config, name):
            raise ConfigError(f"--{name}: {experiment.NAME} runs have no samples to evaluate")
        overrides[name] = value
    run_config = dataclasses.replace(run_config, **overrides)
    run_config.validate()
    dataset = experiment.load_data(run_config)
    figures = {
        k: v if isinstance(v, str) else float(v)
        for k, v in experiment.evaluate(run_config, state, dataset).items()
    }
    if not figures:
        raise ConfigError(
            f"this {experiment.NAME} run's settings report no evaluation figures "
            "(for a generator: --eval_samples=10000)"
        )
    if "eval/fid" in figures:  # The network that measured them (loaded once per process).
        figures.setdefault("eval/feature_net_sha256", feature_net.load(run_config).sha256)
    result = {
        **figures,
        "step": int(state.step),
        "workdir": str(workdir),
        "experiment": experiment.NAME,
        "config": run_config.to_dict(),
    }
    if not sharding.is_main_process():  # Every host computed the same figures.
        return result
    try:
        out.write_text(json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise ConfigError(f"--out={out}: cannot write there ({e.strerror or e})") from None
    print(f"{experiment.NAME} run {workdir} at step {result['step']}:")
    for key, value in figures.items():
        print(f"  {key:28s} {value if isinstance(value, str) else format(value, '.6g')}")
    print(f"written to {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "python -m experiments.evaluate"
    return cli.main(lambda: evaluate(cli.parse(EvaluateConfig, argv, prog=prog)))


if __name__ == "__main__":
    cli.exit_with(main())
