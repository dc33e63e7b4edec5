"""The report's DCGAN (Keras-GAN's dcgan.py) on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.dcgan --iterations=4000 --gen_interval=50

eval/fid, eval/precision and eval/recall (10,000 generated against 10,000 test images, in
the feature space of experiments.classifier's network) every --eval_interval iterations.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp

from experiments import classifier
from genjax import cli, data, images, loop, sharding
from genjax.config import DCGANConfig, parse_flags
from genjax.models.dcgan import Discriminator, Generator
from genjax.steps import dcgan as steps
from genjax.trainers import IterationTrainer

IDENTITY_FIELDS = (
    "dataset",
    "batch_size",
    "seed",
    "learning_rate",
    "beta1",
    "latent_dim",
    "sampling",
    "gen_interval",
    "fuse",
)
GRID = 5  # The report's 5x5 grid of generated images.


def report_line(iteration: int, m) -> str:
    """The report's console line."""
    return (
        f"{iteration} [D loss: {m['train/discriminator_loss']:f}, "
        f"acc.: {m['train/discriminator_accuracy']:.2f}%] "
        f"[G loss: {m['train/generator_loss']:f}]"
    )


def load_data(config: DCGANConfig) -> data.Dataset:
    dataset = data.load_dataset(config.dataset, config.data_dir, config.data_source)
    loop.steps_per_epoch(config, len(dataset.train))  # A batch larger than the data: refuse.
    return dataset


def family(config: DCGANConfig) -> loop.Family:
    bound = steps.GANSteps(config.latent_dim, config.batch_size, config.sampling)
    return loop.Family("dcgan", bound.train_step, None, steps.PIXEL_RANGE, IDENTITY_FIELDS)


def fixed_noise(config: DCGANConfig) -> jax.Array:
    """The noise of the generated-image grids: the same every time, from the run's seed."""
    return jax.random.normal(loop.run_keys(config.seed).sample, (GRID * GRID, config.latent_dim))


def trainer(config: DCGANConfig, dataset: data.Dataset) -> IterationTrainer:
    bound = steps.GANSteps(config.latent_dim, config.batch_size, config.sampling)
    keys = loop.run_keys(config.seed)
    fuse = config.fuse
    if fuse == "auto":
        fuse = "loop" if jax.default_backend() == "cpu" else "scan"
    train_images = data.to_device(dataset.train).images
    several_devices = sharding.count() > 1

    def run_segment(state, start, length, should_stop):
        if fuse == "scan":
            return bound.train_steps(state, train_images, keys.step, keys.data, length)
        # One dispatch per iteration; metrics stay on the device until the segment ends. The
        # host waits for the previous iteration before going on (one iteration in flight), so
        # should_stop is polled as iterations finish and a signal ends the segment within
        # about one iteration; polls of iterations that were only queued all came at once.
        # Several devices wait for each iteration: back-to-back cross-device dispatches can
        # abort XLA:CPU's collectives (a rendezvous timeout).
        rows = []
        for _ in range(length):
            state, m = bound.train_step(state, train_images, keys.step, keys.data)
            jax.block_until_ready(m if several_devices or not rows else rows[-1])
            rows.append(m)
            if should_stop():
                break
        return state, {k: jnp.stack([r[k] for r in rows]) for k in rows[0]}

    return IterationTrainer(
        config.iterations,
        config.gen_interval,
        config.log_interval,
        run_segment,
        report_line,
        config.checkpoint_interval,
        config.eval_interval if config.eval_samples else 0,
    )


def trial(config: DCGANConfig, dataset: data.Dataset, early_stop=None) -> loop.Trial:
    noise = fixed_noise(config)

    def media(state, iteration, outputs):
        del outputs  # Nothing is evaluated per example at an image point.
        generated = images.to_uint8(jax.device_get(steps.generate(state, noise)), steps.PIXEL_RANGE)
        caption = f"iteration {iteration}: the same 25 noise vectors every time"
        return {"images": {"generated_images": (images.grid(generated, GRID, GRID), caption)}}

    evaluate = prepare = None
    if config.eval_samples:
        quality = classifier.SampleQuality(config, dataset)
        prepare = quality.prepare
        eval_key = loop.run_keys(config.seed).evaluation

        def evaluate(state):
            # The same noise at every evaluation point: the FID curve shows the generator's
            # progress, not the draw.
            def sample(i):
                z = jax.random.normal(
                    jax.random.fold_in(eval_key, i), (classifier.EVAL_BATCH, config.latent_dim)
                )
                return steps.generate(state, z)

            return quality(sample, steps.PIXEL_RANGE)

    image_shape = dataset.info.image_shape
    init_state = functools.partial(
        steps.create_state,
        Generator(config.latent_dim, image_shape[-1]),
        Discriminator(),
        config.learning_rate,
        config.beta1,
    )
    return loop.Trial(config, init_state, media, evaluate, early_stop, prepare)


def comparison(config: DCGANConfig, state, dataset: data.Dataset):
    """Generated images from the run's fixed noise (no originals to show)."""
    generated = jax.device_get(steps.generate(state, fixed_noise(config)))
    return None, images.to_uint8(generated, steps.PIXEL_RANGE)


EXPERIMENT = loop.Experiment("dcgan", DCGANConfig, load_data, family, trial, trainer, comparison)


def run(config: DCGANConfig) -> dict:
    return EXPERIMENT.run(config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: run(parse_flags(DCGANConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
