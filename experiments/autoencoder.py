"""The report's autoencoder on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.autoencoder --latent_dim=2 --epochs=20 --wandb_mode=offline

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

import jax

from genjax import cli, data, images, run
from genjax.config import AutoencoderConfig as Config
from genjax.loops import epochs
from genjax.models.autoencoder import Autoencoder
from genjax.steps import autoencoder as steps
from genjax.steps import fused

NAME = "autoencoder"
# Settings that define a run besides the shared ones: a workdir refuses others.
IDENTITY = ("latent_dim", "hidden_dim", "latent_activation", "leaky_slope")
# Settings held in the state as arrays: trials that differ only in these train as one program.
VECTOR_FIELDS = ("seed", "learning_rate")


def load_data(config: Config) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """The model and its optimizer, freshly initialised: what a checkpoint restores into."""
    model = Autoencoder(
        latent_dim=config.latent_dim,
        hidden_dim=config.hidden_dim,
        latent_activation=config.latent_activation,
        leaky_slope=config.leaky_slope,
        image_shape=info.image_shape,
    )
    return steps.create_state(model, config.learning_rate, key)


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) one run per config; several that differ only in VECTOR_FIELDS
    (a vectorized sweep) train as one vmapped program. Returns their summaries."""
    config = configs[0]
    dataset = load_data(config)
    states = [create_state(c, dataset.info, run.keys(c.seed).init) for c in configs]
    total = epochs.total_steps(config, dataset)
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    _, latent_labels = dataset.fixed_test_examples(config.latent_points)

    def pictures(config, state, epoch, outputs):
        recon = steps.reconstruct(state, shown_x)
        panel = images.reconstruction_grid(shown, images.to_uint8(jax.device_get(recon)))
        # The codes of the first latent_points test images, from this epoch's validation pass.
        png, scatter = images.latent_plots(
            outputs["z"], latent_labels, dataset.info.class_names, config.scatter_table_points
        )
        caption = f"epoch {epoch}: odd rows are test images, even rows their reconstructions"
        return {
            "images": {"reconstructions": (panel, caption), "latent_space": png},
            "scatters": {"latent_space_scatter": scatter},
        }

    with run.open(NAME, configs, states, IDENTITY, dataset, total, early_stops) as runs:
        return epochs.train(
            runs,
            dataset,
            steps,
            pictures=pictures,
            keep=len(latent_labels),
            evaluate=lambda config, state: evaluate(config, state, dataset),
        )


def evaluate(config: Config, state, dataset: data.Dataset) -> dict[str, float]:
    """The whole test split's reconstruction error: the report's figure per latent size."""
    test = data.to_device(dataset.test)
    errors = fused.evaluate(
        state,
        test.images,
        test.labels,
        run.keys(config.seed).eval,
        eval_step=steps.reconstruction_errors,
        batch_size=min(config.eval_batch_size, len(test)),
        pixel_range=steps.PIXEL_RANGE,
    )
    return {f"eval/{k}": float(v) for k, v in jax.device_get(errors).items()}


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the fixed test images and this run's reconstructions (uint8)."""
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    recon = steps.reconstruct(state, jax.device_put(data.scale(shown, steps.PIXEL_RANGE)))
    return shown, images.to_uint8(jax.device_get(recon))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    sys.exit(main())
