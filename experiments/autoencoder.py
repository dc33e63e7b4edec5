"""The report's autoencoder on Fashion-MNIST (or MNIST), logged to W&B.

    python -m experiments.autoencoder --latent_dim=2 --epochs=20 --wandb_mode=offline

Running the same command again with the same --workdir resumes from its last checkpoint.
At the end it is also scored as a generator, as the VAE is: images decoded from a Gaussian
(mean and full covariance) fitted to the training split's codes, with eval/fid,
eval/precision and eval/recall beside eval/recon_mse.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from genjax import cli, data, images, run
from genjax.config import AutoencoderConfig as Config
from genjax.evaluation import fid
from genjax.evaluation.feature_net import SampleQuality, Sampler
from genjax.loops import epochs
from genjax.models.autoencoder import Autoencoder
from genjax.steps import autoencoder as steps
from genjax.steps import fused

NAME = "autoencoder"
# Settings that define a run besides the shared ones: a workdir refuses others.
IDENTITY = ("latent_dim", "hidden_dim", "latent_activation", "leaky_slope")
# Settings held in the state as arrays: trials that differ only in these train as one program.
VECTOR_FIELDS = ("seed", "learning_rate")
LIKELIHOOD = "none: not a density model (no prior over its codes)"


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
    fitted = {}  # The end's Gaussian, by (workdir, step): its evaluation and picture share it.

    def gaussian(config, state):
        key = (config.workdir, int(state.step))
        if key not in fitted:
            fitted[key] = code_gaussian(config, state, dataset)
        return fitted[key]

    def pictures(config, state, epoch, outputs):
        recon = steps.reconstruct(state, shown_x)
        panel = images.reconstruction_grid(shown, images.to_uint8(jax.device_get(recon)))
        # The codes of the first latent_points test images, from this epoch's validation pass.
        png, scatter = images.latent_plots(
            outputs["z"], latent_labels, dataset.info.class_names, config.scatter_table_points
        )
        caption = f"epoch {epoch}: odd rows are test images, even rows their reconstructions"
        shown_pictures = {"reconstructions": (panel, caption), "latent_space": png}
        if epoch == config.epochs:
            shown_pictures["generated_images"] = generated_picture(
                config, state, gaussian(config, state)
            )
        return {"images": shown_pictures, "scatters": {"latent_space_scatter": scatter}}

    quality = SampleQuality(config, dataset) if config.eval_samples else None

    def figures(config, state):
        return evaluate(config, state, dataset, quality, gaussian(config, state))

    prepare = quality.prepare if quality is not None else None
    with run.open(NAME, configs, states, IDENTITY, dataset, total, early_stops, prepare) as runs:
        return epochs.train(
            runs, dataset, steps, pictures=pictures, keep=len(latent_labels), evaluate=figures
        )


def code_gaussian(config: Config, state, dataset: data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(mean [latent_dim], scale [latent_dim, latent_dim]) of the training split's codes:
    z = mean + scale @ eps, eps ~ N(0, I), has their mean and (unbiased) covariance.

    The scale comes from an eigendecomposition, not a Cholesky factor: codes with a dead
    (always 0) ReLU unit have a singular covariance."""
    codes = _whole_split(config, state, dataset.train, steps.codes, outputs=("z",))["z"]
    mean, cov = fid.gaussian_fit(np.asarray(codes))
    variances, axes = np.linalg.eigh(cov)
    scale = axes * np.sqrt(np.clip(variances, 0.0, None))
    return mean.astype(np.float32), scale.astype(np.float32)


def generated_picture(config: Config, state, gaussian) -> tuple[np.ndarray, str]:
    """num_generated decodings of the fitted Gaussian's draws, 8 to a row, with a caption."""
    drawn = steps.generate(state, *gaussian, run.keys(config.seed).sample, config.num_generated)
    cols = 8
    grid = images.grid(
        images.to_uint8(jax.device_get(drawn)), -(-config.num_generated // cols), cols
    )
    return grid, "decoded from z ~ N(mean, covariance) of the training split's codes"


def evaluate(
    config: Config, state, dataset: data.Dataset, quality=None, gaussian=None
) -> dict[str, float | str]:
    """The whole test split's reconstruction error (the report's figure per latent size)
    and, eval_samples > 0, the autoencoder scored as a generator: eval/fid, eval/precision,
    eval/recall of images decoded from code_gaussian's draws, and the feature network's
    digest (eval/feature_net_sha256, for the summary)."""
    errors = _whole_split(config, state, dataset.test, steps.reconstruction_errors)
    figures = {f"eval/{k}": float(v) for k, v in errors.items()}
    if not config.eval_samples:
        return figures
    quality = quality or SampleQuality(config, dataset)
    generator = sampler(config, state, dataset, gaussian)
    return figures | quality.of(generator, run.keys(config.seed).evaluation)


def sampler(config: Config, state, dataset: data.Dataset, gaussian=None) -> Sampler:
    """Decodings of draws of a Gaussian fitted to the training split's codes (code_gaussian,
    or `gaussian` when already fitted): an autoencoder has no prior of its own."""
    mean, scale = gaussian or code_gaussian(config, state, dataset)

    def draw(key, labels):
        return steps.generate(state, mean, scale, key, len(labels))

    return Sampler(draw, steps.PIXEL_RANGE)


def _whole_split(config: Config, state, split: data.Split, eval_step, outputs=()) -> dict:
    """fused.evaluate of eval_step over a whole split, on the host; `outputs` kept whole."""
    on_device = data.to_device(split)
    figures = fused.evaluate(
        state,
        on_device.images,
        on_device.labels,
        run.keys(config.seed).eval,
        eval_step=eval_step,
        batch_size=min(config.eval_batch_size, len(on_device)),
        pixel_range=steps.PIXEL_RANGE,
        outputs=outputs,
        keep=len(on_device) if outputs else 0,
    )
    return jax.device_get(figures)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the fixed test images and this run's reconstructions (uint8)."""
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    recon = steps.reconstruct(state, jax.device_put(data.scale(shown, steps.PIXEL_RANGE)))
    return shown, images.to_uint8(jax.device_get(recon))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
