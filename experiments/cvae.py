"""The report's VAE conditioned on the class (Kingma et al. 2014, M2-style), logged to W&B.

    python -m experiments.cvae --latent_dim=2 --epochs=20
    python -m experiments.cvae --likelihood=bernoulli --binarize=dynamic   # log p(x|y), nats

Logs what the VAE logs, with the labels given, plus generated_by_class (one row per class,
one fixed z per column) and eval/class_accuracy of class-conditioned samples.

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np

# The VAE's data (binarization included) and its rule for when a bound is a likelihood.
from experiments.vae import load_data, reports_likelihood
from genjax import cli, data, images, run
from genjax.config import CVAEConfig as Config
from genjax.evaluation.feature_net import SampleQuality, Sampler
from genjax.loops import epochs
from genjax.models.cvae import CVAE
from genjax.steps import cvae as steps

NAME = "cvae"
# Settings that define a run besides the shared ones: a workdir refuses others.
IDENTITY = ("latent_dim", "hidden_dim", "likelihood", "beta", "binarize")
# Settings held in the state as arrays: trials that differ only in these train as one program.
VECTOR_FIELDS = ("seed", "learning_rate", "beta")
# Where no bound is reported: the one genjax computes is a Bernoulli likelihood's.
LIKELIHOOD = "none at these settings: --likelihood=bernoulli --binarize=dynamic give one"
MANIFOLD_SIZE = 10  # Per class: ten 10x10 manifolds fit one picture where ten 20x20 would not.


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """The model, its optimizer and loss settings, freshly initialised."""
    model = CVAE(
        latent_dim=config.latent_dim, hidden_dim=config.hidden_dim, image_shape=info.image_shape
    )
    return steps.create_state(
        model,
        info.num_classes,
        config.learning_rate,
        config.beta,
        key,
        likelihood=config.likelihood,
        dynamic_binarization=config.binarize == "dynamic",
    )


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) one run per config; several that differ only in VECTOR_FIELDS
    (a vectorized sweep) train as one vmapped program. Returns their summaries."""
    config = configs[0]
    dataset = load_data(config)
    info = dataset.info
    states = [create_state(c, info, run.keys(c.seed).init) for c in configs]
    total = epochs.total_steps(config, dataset)
    shown, shown_labels = dataset.fixed_test_examples(config.num_reconstructions)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    shown_y = jax.device_put(shown_labels)
    _, latent_labels = dataset.fixed_test_examples(config.latent_points)
    pairs = min(config.interpolation_pairs, len(shown) // 2)
    cols = 8

    def pictures(config, state, epoch, outputs):
        arrays = steps.pictures(
            state,
            shown_x,
            shown_y,
            run.keys(config.seed).sample,
            num_generated=config.num_generated,
            class_columns=config.class_columns,
            manifold_size=MANIFOLD_SIZE if config.latent_dim == 2 else 0,
            pairs=pairs,
            interpolation_steps=config.interpolation_steps,
        )
        arrays = {k: images.to_uint8(v) for k, v in jax.device_get(arrays).items()}
        generated = arrays["generated"]
        # z_mean of the first latent_points test images, from this epoch's validation pass.
        png, scatter = images.latent_plots(
            outputs["z_mean"], latent_labels, info.class_names, config.scatter_table_points
        )
        rows = np.split(arrays["by_class"], info.num_classes)
        shown_pictures = {
            "reconstructions": (
                images.reconstruction_grid(shown, arrays["reconstructions"], cols),
                f"epoch {epoch}: test images (odd rows) and decodings of their z_mean and label",
            ),
            "generated_images": (
                images.grid(generated, -(-len(generated) // cols), cols),
                f"epoch {epoch}: decoded from z ~ N(0, I), classes in turn, the same z every epoch",
            ),
            "generated_by_class": images.Deferred(
                functools.partial(
                    images.labelled_rows,
                    rows,
                    info.class_names,
                    f"epoch {epoch}: one row per class, the same z down each column",
                )
            ),
            "latent_space": png,
        }
        if "manifold" in arrays:
            per_class = np.split(arrays["manifold"], info.num_classes)
            panels = [images.grid(m, MANIFOLD_SIZE, MANIFOLD_SIZE) for m in per_class]
            shown_pictures["latent_manifold"] = (
                images.grid(np.stack(panels), 2, -(-len(panels) // 2)),
                "per class (row-major): decodings over the prior's 5%..95% quantiles",
            )
        if pairs:
            shown_pictures["interpolations"] = (
                images.grid(arrays["interpolations"], pairs, config.interpolation_steps),
                "each row: decodings along a straight line between two test images' "
                "(z_mean, one-hot label)",
            )
        return {"images": shown_pictures, "scatters": {"latent_space_scatter": scatter}}

    quality = SampleQuality(config, dataset) if config.eval_samples else None

    def figures(config, state):
        return evaluate(config, state, dataset, quality)

    reports = quality is not None or reports_likelihood(config)
    prepare = quality.prepare if quality is not None else None
    with run.open(NAME, configs, states, IDENTITY, dataset, total, early_stops, prepare) as runs:
        return epochs.train(
            runs,
            dataset,
            steps,
            pictures=pictures,
            keep=len(latent_labels),
            evaluate=figures if reports else None,
        )


def evaluate(config: Config, state, dataset: data.Dataset, quality=None) -> dict[str, float]:
    """The end-of-run figures: the bounds on log p(x | y) of the test split (Bernoulli,
    binarized), and eval/fid, eval/precision, eval/recall, eval/class_accuracy(_worst) of
    samples of every class in turn (eval_samples > 0)."""
    key = run.keys(config.seed).evaluation
    figures = {}
    if reports_likelihood(config):
        n = min(config.iwae_examples or len(dataset.test), len(dataset.test))
        test_x = data.scale(jax.device_put(dataset.test.images[:n]), steps.PIXEL_RANGE)
        bounds = steps.likelihood_bounds(
            state,
            test_x,
            jax.device_put(dataset.test.labels[:n]),
            key,
            num_samples=config.iwae_samples,
            chunk_size=config.iwae_chunk,
            batch_size=min(config.iwae_batch, n),
        )
        figures |= {
            "eval/iwae_nll": -bounds["iwae"],
            "eval/neg_elbo": -bounds["elbo"],
            "eval/iwae_samples": config.iwae_samples,
            "eval/iwae_examples": n,
        }
    if config.eval_samples:
        quality = quality or SampleQuality(config, dataset)
        figures |= quality.of(sampler(config, state, dataset), key)
    return figures


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Decodings of z ~ N(0, I) as the classes asked for."""
    return Sampler(functools.partial(steps.generate, state), steps.PIXEL_RANGE, conditional=True)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the fixed test images and the decodings of their z_mean."""
    shown, labels = dataset.fixed_test_examples(config.num_reconstructions)
    x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    recon = steps.reconstruct(state, x, jax.device_put(labels))
    return shown, images.to_uint8(jax.device_get(recon))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
