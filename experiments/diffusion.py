"""DDPM (Ho et al. 2020) on Fashion-MNIST (or MNIST): a small U-Net predicting the noise,
sampled by DDIM (Song et al. 2021) or ancestral steps, logged to W&B.

    python -m experiments.diffusion                          # DDIM, 50 steps
    python -m experiments.diffusion --schedule=cosine --sampler=ancestral --sample_steps=250

Logged: train/loss every iteration; at image points a 5x5 grid from the same noise every
time and one sample's trajectory (x_t, and the model's estimate of the image, from noise to
image), both with the weights' moving average; at evaluation points val/loss and eval/fid,
eval/precision, eval/recall; at the end also eval/fid_SAMPLER_N for each of
--final_samplers and --final_sample_steps.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import jax
import numpy as np

from genjax import cli, data, images, run
from genjax.config import DiffusionConfig as Config
from genjax.evaluation.feature_net import EVAL_BATCH, SampleQuality, Sampler
from genjax.loops import iterations
from genjax.models.unet import UNet
from genjax.steps import diffusion as steps

NAME = "diffusion"
# Settings that define a run besides the shared ones: a workdir refuses others. The sampler's
# settings are not among them: they change pictures and figures, not training.
IDENTITY = (
    "width",
    "attention",
    "ema_decay",
    "timesteps",
    "schedule",
    "sampling",
    "gen_interval",
    "fuse",
)
VECTOR_FIELDS = ()  # Not vectorized: one U-Net already fills a CPU.
LIKELIHOOD = "not computed: the DDPM variational bound is not implemented"
GRID = 5  # A 5x5 grid of samples.
FRAMES = 10  # Trajectory frames, noise to image.
FIGURES = ("eval/fid", "eval/precision", "eval/recall")

# (config, state, noise, key, sampler, num_steps) -> (images, (x_t, final estimates) of
# the first image, [steps + 1, ...] each).
Generate = Callable[..., tuple[jax.Array, tuple[jax.Array, jax.Array]]]


def load_data(config: Config) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """The U-Net with clipped Adam(learning_rate) and its moving average, freshly initialised."""
    return steps.create_state(
        UNet(config.width, config.attention),
        config.learning_rate,
        config.ema_decay,
        config.schedule,
        config.timesteps,
        key,
    )


def generate(config: Config, state, noise, key, sampler: str, num_steps: int):
    """Images in [-1, 1] from noise x_T with the averaged weights, and one's trajectory."""
    return steps.generate(state, noise, key, num_steps=num_steps, sampler=sampler, eta=config.eta)


def fixed_noise(config, shape) -> tuple[jax.Array, jax.Array]:
    """The grid's starting noise and its sampler's key: the same every time, from the seed."""
    noise_key, sampler_key = jax.random.split(run.keys(config.seed).sample)
    return jax.random.normal(noise_key, (GRID * GRID, *shape)), sampler_key


def trajectory_strip(trajectory) -> np.ndarray:
    """Two rows of FRAMES evenly spaced steps: x_t above, the final estimate below."""
    xs, finals = (images.to_uint8(np.asarray(a), steps.PIXEL_RANGE) for a in trajectory)
    shown = np.unique(np.round(np.linspace(0, len(xs) - 1, FRAMES)).astype(int))
    return images.grid(np.concatenate([xs[shown], finals[shown]]), 2, len(shown))


def picture_maker(generate: Generate, info: data.DatasetInfo):
    """An image point's pictures: the sample grid and the first sample's trajectory."""

    def pictures(config, state, iteration):
        noise, key = fixed_noise(config, info.image_shape)
        sampler, n = config.sampler, config.sample_steps
        generated, trajectory = jax.device_get(generate(config, state, noise, key, sampler, n))
        grid = images.grid(images.to_uint8(generated, steps.PIXEL_RANGE), GRID, GRID)
        return {
            "images": {
                "generated_images": (
                    grid,
                    f"iteration {iteration}: {sampler}, {n} steps, the same "
                    f"{GRID * GRID} noise images every time",
                ),
                "trajectory": (
                    trajectory_strip(trajectory),
                    f"iteration {iteration}: the grid's first sample, noise (left) to image; "
                    "top x_t, bottom the model's estimate of the final image from it",
                ),
            }
        }

    return pictures


def denoising_sampler(generate: Generate, config, state, info: data.DatasetInfo) -> Sampler:
    """Images from noise by config's sampler and step count, with the averaged weights."""

    def draw(key, labels):
        noise_key, sampler_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (len(labels), *info.image_shape))
        return generate(config, state, noise, sampler_key, config.sampler, config.sample_steps)[0]

    return Sampler(draw, steps.PIXEL_RANGE)


def sample_quality(
    generate: Generate, config, state, dataset: data.Dataset, quality=None
) -> dict[str, float]:
    """eval/fid, eval/precision, eval/recall of eval_samples images (the same noise at every
    evaluation point: the curve shows the model's progress, not the draw); once trained, also
    those of each final sampler and step count, as eval/fid_SAMPLER_N and its kin."""
    if not config.eval_samples:
        return {}
    quality = quality or SampleQuality(config, dataset)
    key = run.keys(config.seed).evaluation
    # Batches of EVAL_BATCH, or one of them all when fewer (the sampler's calls dominate).
    batch = min(EVAL_BATCH, config.eval_samples)

    def figures(sampler_name: str, num_steps: int) -> dict[str, float]:
        chosen = dataclasses.replace(config, sampler=sampler_name, sample_steps=num_steps)
        return quality.of(denoising_sampler(generate, chosen, state, dataset.info), key, batch)

    out = figures(config.sampler, config.sample_steps)
    if int(jax.device_get(state.step)) < config.iterations:
        return out
    main = (config.sampler, config.sample_steps)
    for name in config.final_sampler_list():
        for n in config.final_steps():
            table = out if (name, n) == main else figures(name, n)
            out = out | {f"{k}_{name}_{n}": table[k] for k in FIGURES}
    return out


def train_run(configs, experiment, early_stops=None) -> list[dict]:
    """Trains (or resumes) the run of configs[0] for this module or flow matching (which
    brings its own NAME, IDENTITY, create_state, generate and steps)."""
    (config,) = configs
    dataset = load_data(config)
    state = experiment.create_state(config, dataset.info, run.keys(config.seed).init)
    total = iterations.total_steps(config, dataset)
    pictures = picture_maker(experiment.generate, dataset.info)
    quality = SampleQuality(config, dataset) if config.eval_samples else None

    def figures(config, state):
        return sample_quality(experiment.generate, config, state, dataset, quality)

    prepare = quality.prepare if quality is not None else None
    name, identity = experiment.NAME, experiment.IDENTITY
    with run.open(name, configs, [state], identity, dataset, total, early_stops, prepare) as (r,):
        summary = iterations.train(
            r,
            dataset,
            experiment.steps,
            pictures=pictures,
            evaluate=figures if quality is not None else None,
            report_line=report_line,
        )
    return [summary]


def report_line(iteration: int, m) -> str:
    return f"{iteration} [loss: {m['train/loss']:f}, grad norm: {m['train/grad_norm']:.3f}]"


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) the run of configs[0] (not vectorized)."""
    return train_run(configs, sys.modules[__name__], early_stops)


def evaluate(config: Config, state, dataset: data.Dataset, quality=None) -> dict[str, float]:
    """eval/fid, eval/precision, eval/recall (and, trained, the final samplers' table)."""
    return sample_quality(generate, config, state, dataset, quality)


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Images from x_T ~ N(0, I) by the run's sampler and step count."""
    return denoising_sampler(generate, config, state, dataset.info)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the grid's samples from the run's fixed noise (no originals)."""
    return grid_samples(generate, config, state, dataset)


def grid_samples(generate: Generate, config, state, dataset: data.Dataset):
    """(None, the grid's samples as uint8): no originals beside them."""
    noise, key = fixed_noise(config, dataset.info.image_shape)
    generated, _ = generate(config, state, noise, key, config.sampler, config.sample_steps)
    return None, images.to_uint8(jax.device_get(generated), steps.PIXEL_RANGE)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
