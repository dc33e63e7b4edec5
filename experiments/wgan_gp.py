"""Keras-GAN's WGAN-GP (wgan_gp.py) on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.wgan_gp --iterations=30000 --gen_interval=100

Each iteration is n_critic critic updates, each on its own real batch, then one generator
update. Logged per iteration: the critic's and the generator's losses, the Wasserstein
estimate mean C(real) - mean C(fake) and the (unweighted) gradient penalty; at evaluation
points the critic on held-out images (val/wasserstein) and eval/fid, eval/precision,
eval/recall.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

import jax

# The DCGAN's: its data, fixed noise and FID evaluation serve any unconditional generator.
from experiments.dcgan import GRID, evaluate, fixed_noise, load_data
from experiments.dcgan import LIKELIHOOD as LIKELIHOOD  # Registry parts, the DCGAN's.
from experiments.dcgan import comparison as comparison
from experiments.dcgan import sampler as sampler
from genjax import cli, data, images, run
from genjax.config import WGANGPConfig as Config
from genjax.evaluation.feature_net import SampleQuality
from genjax.loops import iterations
from genjax.models.wgan_gp import Critic, Generator
from genjax.steps import wgan_gp as steps

NAME = "wgan_gp"
# Settings that define a run besides the shared ones: a workdir refuses others. n_critic sets
# the images each iteration draws; the image interval and the fusing, the dispatches.
IDENTITY = ("latent_dim", "n_critic", "gp_weight", "sampling", "gen_interval", "fuse")
VECTOR_FIELDS = ()  # GAN runs are not vectorized.


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """Generator and critic with RMSprop(learning_rate), freshly initialised."""
    return steps.create_state(
        Generator(config.latent_dim, info.image_shape[-1]),
        Critic(),
        config.learning_rate,
        config.n_critic,
        config.gp_weight,
        key,
    )


def report_line(iteration: int, m) -> str:
    """Keras-GAN's console line, with the Wasserstein estimate and the penalty."""
    return (
        f"{iteration} [D loss: {m['train/critic_loss']:f}, "
        f"W: {m['train/wasserstein']:f}, GP: {m['train/gradient_penalty']:f}] "
        f"[G loss: {m['train/generator_loss']:f}]"
    )


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) the run of configs[0] (GAN runs are not vectorized)."""
    (config,) = configs
    dataset = load_data(config)
    state = create_state(config, dataset.info, run.keys(config.seed).init)
    total = iterations.total_steps(config, dataset)

    def pictures(config, state, iteration):
        generated = images.to_uint8(
            jax.device_get(steps.generate(state, fixed_noise(config))), steps.PIXEL_RANGE
        )
        caption = f"iteration {iteration}: the same 25 noise vectors every time"
        return {"images": {"generated_images": (images.grid(generated, GRID, GRID), caption)}}

    quality = SampleQuality(config, dataset) if config.eval_samples else None

    def figures(config, state):
        return evaluate(config, state, dataset, quality)

    prepare = quality.prepare if quality is not None else None
    with run.open(NAME, configs, [state], IDENTITY, dataset, total, early_stops, prepare) as (r,):
        summary = iterations.train(
            r,
            dataset,
            steps,
            pictures=pictures,
            evaluate=figures if quality is not None else None,
            report_line=report_line,
        )
    return [summary]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
