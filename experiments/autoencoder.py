"""The report's autoencoder on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.autoencoder --latent_dim=2 --epochs=20 --wandb_mode=offline

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import sys

import jax

from genjax import cli, data, images, loop
from genjax.config import AutoencoderConfig, parse_flags
from genjax.models.autoencoder import Autoencoder
from genjax.steps import autoencoder as steps
from genjax.steps import fused
from genjax.trainers import EpochTrainer

FAMILY = loop.Family(
    "autoencoder",
    steps.train_step,
    steps.eval_step,
    pixel_range=steps.PIXEL_RANGE,
    identity_fields=(
        *loop.BASE_IDENTITY_FIELDS,
        "latent_dim",
        "hidden_dim",
        "latent_activation",
        "leaky_slope",
    ),
    vector_fields=("seed", "learning_rate"),
    eval_outputs=steps.EVAL_OUTPUTS,
)


def load_data(config: AutoencoderConfig) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def build_model(config: AutoencoderConfig, image_shape) -> Autoencoder:
    return Autoencoder(
        latent_dim=config.latent_dim,
        hidden_dim=config.hidden_dim,
        latent_activation=config.latent_activation,
        leaky_slope=config.leaky_slope,
        image_shape=image_shape,
    )


def trial(config: AutoencoderConfig, dataset: data.Dataset, early_stop=None) -> loop.Trial:
    model = build_model(config, dataset.info.image_shape)
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    _, latent_labels = dataset.fixed_test_examples(config.latent_points)
    class_names = dataset.info.class_names

    def media(state, epoch, outputs):
        recon = images.to_uint8(jax.device_get(steps.reconstruct(state, shown_x)))
        panel = images.reconstruction_grid(shown, recon)
        # The codes of the first latent_points test images, from this epoch's validation pass.
        png, scatter = images.latent_plots(
            outputs["z"], latent_labels, class_names, config.scatter_table_points
        )
        caption = f"epoch {epoch}: odd rows are test images, even rows their reconstructions"
        return {
            "images": {"reconstructions": (panel, caption), "latent_space": png},
            "scatters": {"latent_space_scatter": scatter},
        }

    def evaluate(state):
        """The whole test split's reconstruction error: the report's figure per latent size."""
        test = data.to_device(dataset.test)
        errors = fused.evaluate(
            state,
            test.images,
            test.labels,
            loop.run_keys(config.seed).eval,
            eval_step=steps.reconstruction_errors,
            batch_size=min(config.eval_batch_size, len(test)),
            pixel_range=steps.PIXEL_RANGE,
        )
        return {f"eval/{k}": float(v) for k, v in jax.device_get(errors).items()}

    init_state = functools.partial(steps.create_state, model, config.learning_rate)
    return loop.Trial(
        config,
        init_state,
        media,
        evaluate,
        early_stop,
        plots=True,
        media_examples=len(latent_labels),
    )


def comparison(config: AutoencoderConfig, state, dataset: data.Dataset):
    """The fixed test images and this run's reconstructions of them (uint8)."""
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    recon = steps.reconstruct(state, jax.device_put(data.scale(shown, steps.PIXEL_RANGE)))
    return shown, images.to_uint8(jax.device_get(recon))


EXPERIMENT = loop.Experiment(
    "autoencoder",
    AutoencoderConfig,
    load_data,
    lambda config: FAMILY,
    trial,
    EpochTrainer,
    comparison,
)


def run(config: AutoencoderConfig) -> dict:
    return EXPERIMENT.run(config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: run(parse_flags(AutoencoderConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
