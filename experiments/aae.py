"""Keras-GAN's adversarial autoencoder (aae.py) on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.aae                               # Keras-GAN: 20,000 iterations
    python -m experiments.aae --latent_dim=2 --prior=mixture

A discriminator on the latent code pushes the encoder's codes toward the prior (N(0, I) or
a mixture of 10 Gaussians). At image points: reconstructions, images decoded from fixed
prior samples and the codes of test images coloured by class; at evaluation points val/*
and eval/fid, eval/precision, eval/recall of images decoded from prior samples.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

import jax

from genjax import cli, data, images, run
from genjax.config import AAEConfig as Config
from genjax.evaluation.feature_net import SampleQuality, Sampler
from genjax.loops import iterations
from genjax.models.aae import AdversarialAutoencoder, LatentDiscriminator, sample_prior
from genjax.steps import aae as steps

NAME = "aae"
# Settings that define a run besides the shared ones: a workdir refuses others. The image
# interval and the fusing set where segments end, and so the dispatches.
IDENTITY = (
    "beta1",
    "latent_dim",
    "hidden_dim",
    "prior",
    "recon_weight",
    "adversarial_weight",
    "sampling",
    "gen_interval",
    "fuse",
)
VECTOR_FIELDS = ()  # Adversarial runs are not vectorized.
LIKELIHOOD = "none: codes matched to the prior adversarially, no bound"
GRID = 5  # Keras-GAN's 5x5 grid of decoded prior samples.
COLS = 8  # Columns of the reconstruction panel.


def load_data(config: Config) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """Autoencoder and discriminator with Adam(learning_rate, beta1), freshly initialised."""
    return steps.create_state(
        AdversarialAutoencoder(config.latent_dim, config.hidden_dim, info.image_shape),
        LatentDiscriminator(),
        config.learning_rate,
        config.beta1,
        key,
        prior=config.prior,
        recon_weight=config.recon_weight,
        adversarial_weight=config.adversarial_weight,
    )


def report_line(iteration: int, m) -> str:
    """Keras-GAN's console line: its "G loss" is the adversarial term, unweighted."""
    return (
        f"{iteration} [D loss: {m['train/discriminator_loss']:f}, "
        f"acc: {m['train/discriminator_accuracy']:.2f}%] "
        f"[G loss: {m['train/adversarial_loss']:f}, mse: {m['train/reconstruction_loss']:f}]"
    )


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) the run of configs[0] (adversarial runs are not vectorized)."""
    (config,) = configs
    dataset = load_data(config)
    state = create_state(config, dataset.info, run.keys(config.seed).init)
    total = iterations.total_steps(config, dataset)
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    latent_x, latent_labels = dataset.fixed_test_examples(config.latent_points)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    latent_x = jax.device_put(data.scale(latent_x, steps.PIXEL_RANGE))
    sample_key, code_key = jax.random.split(run.keys(config.seed).sample)
    prior_z = sample_prior(sample_key, config.prior, GRID * GRID, config.latent_dim)

    def pictures(config, state, iteration):
        arrays = steps.pictures(state, shown_x, prior_z, latent_x, code_key)
        arrays = jax.device_get(arrays)
        recon = images.to_uint8(arrays["reconstructions"], steps.PIXEL_RANGE)
        generated = images.to_uint8(arrays["generated"], steps.PIXEL_RANGE)
        png, scatter = images.latent_plots(
            arrays["codes"], latent_labels, dataset.info.class_names, config.scatter_table_points
        )
        shown_pictures = {
            "images": {
                "reconstructions": (
                    images.reconstruction_grid(shown, recon, COLS),
                    f"iteration {iteration}: test images (odd rows) and decodings of their mu",
                ),
                "generated_images": (
                    images.grid(generated, GRID, GRID),
                    f"iteration {iteration}: decoded from the same {GRID * GRID} prior "
                    f"({config.prior}) samples every time",
                ),
                "latent_space": png,
            }
        }
        if iteration % config.scatter_table_interval == 0 or iteration == config.iterations:
            shown_pictures["scatters"] = {"latent_space_scatter": scatter}
        return shown_pictures

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
    """eval/fid, eval/precision, eval/recall of eval_samples images decoded from prior
    samples, the same samples at every evaluation point."""
    if not config.eval_samples:
        return {}
    quality = quality or SampleQuality(config, dataset)
    return quality.of(sampler(config, state, dataset), run.keys(config.seed).evaluation)


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Decodings of draws of the prior the codes were pushed toward."""

    def draw(key, labels):
        return steps.decode(state, sample_prior(key, config.prior, len(labels), config.latent_dim))

    return Sampler(draw, steps.PIXEL_RANGE)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the fixed test images and the decodings of their mu."""
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    recon = steps.reconstruct(state, jax.device_put(data.scale(shown, steps.PIXEL_RANGE)))
    return shown, images.to_uint8(jax.device_get(recon), steps.PIXEL_RANGE)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
