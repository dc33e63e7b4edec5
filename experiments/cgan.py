"""Keras-GAN's conditional GAN (cgan.py) on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.cgan --iterations=10000 --gen_interval=200

Besides the DCGAN's figures, generated_by_class (one row per class, the same fixed noise down
each column) at every image point, and eval/class_accuracy: the share of generated images of
a class that the FID feature network assigns to it, with the class it does worst on
(eval/class_accuracy_worst).

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from experiments.dcgan import GRID, load_data, report_line
from genjax import cli, data, images, run
from genjax.config import CGANConfig as Config
from genjax.evaluation.feature_net import SampleQuality, Sampler
from genjax.loops import iterations
from genjax.models.cgan import Discriminator, Generator
from genjax.steps import cgan as steps

NAME = "cgan"
# Settings that define a run besides the shared ones: a workdir refuses others. The image
# interval and the fusing set where segments end, and so the dispatches.
IDENTITY = ("beta1", "latent_dim", "sampling", "gen_interval", "fuse")
VECTOR_FIELDS = ()  # GAN runs are not vectorized.
LIKELIHOOD = "none: an implicit model (a GAN has no density to bound)"


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """Both networks with Adam(learning_rate, beta1), freshly initialised."""
    return steps.create_state(
        Generator(config.latent_dim, info.num_classes, info.image_shape),
        Discriminator(info.num_classes),
        config.learning_rate,
        config.beta1,
        config.batch_size,
        key,
    )


def fixed_inputs(config: Config, num_classes: int) -> dict[str, tuple[jax.Array, jax.Array]]:
    """The (noise, labels) of the pictures, the same every time, from the run's seed: the 5x5
    grid (classes in turn), and generated_by_class (class c in row c; one noise per column)."""
    grid_key, class_key = jax.random.split(run.keys(config.seed).sample)
    z = jax.random.normal(class_key, (config.class_columns, config.latent_dim))
    return {
        "generated_images": (
            jax.random.normal(grid_key, (GRID * GRID, config.latent_dim)),
            jnp.arange(GRID * GRID) % num_classes,
        ),
        "generated_by_class": (
            jnp.tile(z, (num_classes, 1)),
            jnp.repeat(jnp.arange(num_classes), config.class_columns),
        ),
    }


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) the run of configs[0] (GAN runs are not vectorized)."""
    (config,) = configs
    dataset = load_data(config)
    state = create_state(config, dataset.info, run.keys(config.seed).init)
    total = iterations.total_steps(config, dataset)
    names = dataset.info.class_names
    inputs = fixed_inputs(config, len(names))

    def pictures(config, state, iteration):
        grid, by_class = (
            images.to_uint8(jax.device_get(steps.generate(state, *inputs[k])), steps.PIXEL_RANGE)
            for k in ("generated_images", "generated_by_class")
        )
        rows = list(by_class.reshape(len(names), config.class_columns, *by_class.shape[1:]))
        title = f"iteration {iteration}: a row per class, the same noise down each column"
        return {
            "images": {
                "generated_images": (
                    images.grid(grid, GRID, GRID),
                    f"iteration {iteration}: the same 25 noise vectors and classes every time",
                ),
                "generated_by_class": images.Deferred(
                    lambda: images.labelled_rows(rows, names, title)
                ),
            }
        }

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
    """eval/fid, eval/precision, eval/recall and eval/class_accuracy(_worst) of eval_samples
    images, every class in turn, from the same noise at every evaluation point."""
    if not config.eval_samples:
        return {}
    quality = quality or SampleQuality(config, dataset)
    return quality.of(sampler(config, state, dataset), run.keys(config.seed).evaluation)


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Images of the classes asked for, from N(0, I) noise."""

    def draw(key, labels):
        z = jax.random.normal(key, (len(labels), config.latent_dim))
        return steps.generate(state, z, labels)

    return Sampler(draw, steps.PIXEL_RANGE, conditional=True)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the 5x5 grid of the run's fixed noise and classes (no originals)."""
    z, labels = fixed_inputs(config, dataset.info.num_classes)["generated_images"]
    return None, images.to_uint8(
        jax.device_get(steps.generate(state, z, labels)), steps.PIXEL_RANGE
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
