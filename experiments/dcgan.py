"""The report's DCGAN (Keras-GAN's dcgan.py) on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.dcgan --iterations=4000 --gen_interval=50

eval/fid, eval/precision and eval/recall (10,000 generated against 10,000 test images, in
the feature space of genjax's FID feature network) every --eval_interval iterations.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

import jax

from genjax import cli, data, images, run
from genjax.config import DCGANConfig as Config
from genjax.evaluation.feature_net import SampleQuality, Sampler
from genjax.loops import iterations
from genjax.models.dcgan import Discriminator, Generator
from genjax.steps import dcgan as steps

NAME = "dcgan"
# Settings that define a run besides the shared ones: a workdir refuses others. The image
# interval and the fusing set where segments end, and so the dispatches.
IDENTITY = ("beta1", "latent_dim", "sampling", "gen_interval", "fuse")
VECTOR_FIELDS = ()  # GAN runs are not vectorized.
LIKELIHOOD = "none: an implicit model (a GAN has no density to bound)"
GRID = 5  # The report's 5x5 grid of generated images.


def load_data(config: Config) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """Both networks with Adam(learning_rate, beta1), freshly initialised."""
    return steps.create_state(
        Generator(config.latent_dim, info.image_shape[-1]),
        Discriminator(),
        config.learning_rate,
        config.beta1,
        key,
    )


def fixed_noise(config: Config) -> jax.Array:
    """The noise of the generated-image grids: the same every time, from the run's seed."""
    return jax.random.normal(run.keys(config.seed).sample, (GRID * GRID, config.latent_dim))


def report_line(iteration: int, m) -> str:
    """The report's console line."""
    return (
        f"{iteration} [D loss: {m['train/discriminator_loss']:f}, "
        f"acc.: {m['train/discriminator_accuracy']:.2f}%] "
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


def evaluate(config: Config, state, dataset: data.Dataset, quality=None) -> dict[str, float]:
    """eval/fid, eval/precision, eval/recall of eval_samples generated images. The same noise
    at every evaluation point: the FID curve shows the generator's progress, not the draw."""
    if not config.eval_samples:
        return {}
    quality = quality or SampleQuality(config, dataset)
    return quality.of(sampler(config, state, dataset), run.keys(config.seed).evaluation)


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Images generated from N(0, I) noise."""

    def draw(key, labels):
        return steps.generate(state, jax.random.normal(key, (len(labels), config.latent_dim)))

    return Sampler(draw, steps.PIXEL_RANGE)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: images generated from the run's fixed noise (no originals)."""
    generated = jax.device_get(steps.generate(state, fixed_noise(config)))
    return None, images.to_uint8(generated, steps.PIXEL_RANGE)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
