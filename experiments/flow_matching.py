"""Conditional flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) on
Fashion-MNIST (or MNIST): a small U-Net predicting the velocity of the straight path from
noise to image, sampled by Euler or Heun steps, logged to W&B.

    python -m experiments.flow_matching                      # Heun, 20 steps
    python -m experiments.flow_matching --sampler=euler --sample_steps=50

Logged as experiments.diffusion: train/loss; at image points a 5x5 grid from fixed noise and
one sample's trajectory (x_t, and its one-step estimate of the image), with the weights'
moving average; val/loss, eval/fid, eval/precision, eval/recall at evaluation points; at the
end also eval/fid_SAMPLER_N for each of --final_samplers and --final_sample_steps.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

import jax

# The diffusion experiment's: its loop, pictures and figures serve any noise-to-image sampler.
from experiments.diffusion import denoising_sampler, grid_samples, sample_quality, train_run
from experiments.diffusion import load_data as load_data  # A registry part.
from genjax import cli, data
from genjax.config import FlowMatchingConfig as Config
from genjax.evaluation.feature_net import Sampler
from genjax.models.unet import UNet
from genjax.steps import flow_matching as steps

NAME = "flow_matching"
# Settings that define a run besides the shared ones: a workdir refuses others. The sampler's
# settings are not among them: they change pictures and figures, not training.
IDENTITY = ("width", "attention", "ema_decay", "sampling", "gen_interval", "fuse")
VECTOR_FIELDS = ()  # Not vectorized: one U-Net already fills a CPU.
# An exact log-likelihood integrates the learned field's divergence along the ODE.
LIKELIHOOD = "not computed: the ODE's log-likelihood is not implemented"


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """The U-Net with clipped Adam(learning_rate) and its moving average, freshly initialised."""
    return steps.create_state(
        UNet(config.width, config.attention), config.learning_rate, config.ema_decay, key
    )


def generate(config: Config, state, noise, key, sampler: str, num_steps: int):
    """Images in [-1, 1] from noise (t = 0) with the averaged weights, and one's trajectory."""
    return steps.generate(state, noise, key, num_steps=num_steps, sampler=sampler)


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) the run of configs[0] (not vectorized)."""
    return train_run(configs, sys.modules[__name__], early_stops)


def evaluate(config: Config, state, dataset: data.Dataset, quality=None) -> dict[str, float]:
    """eval/fid, eval/precision, eval/recall (and, trained, the final samplers' table)."""
    return sample_quality(generate, config, state, dataset, quality)


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Images from noise (t = 0) by the run's sampler and step count."""
    return denoising_sampler(generate, config, state, dataset.info)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the grid's samples from the run's fixed noise (no originals)."""
    return grid_samples(generate, config, state, dataset)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
