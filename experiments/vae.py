"""The report's variational autoencoder, with generation, latent pictures and likelihoods.

    python -m experiments.vae --latent_dim=2 --epochs=20
    python -m experiments.vae --likelihood=bernoulli --binarize=dynamic   # nats, IWAE bound

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import jax
import numpy as np

from experiments import classifier
from genjax import cli, data, images, loop
from genjax.config import VAEConfig, parse_flags
from genjax.evaluation import likelihood
from genjax.models.autoencoder import VAE
from genjax.steps import vae as steps
from genjax.trainers import EpochTrainer

IDENTITY_FIELDS = (
    *loop.BASE_IDENTITY_FIELDS,
    "latent_dim",
    "hidden_dim",
    "likelihood",
    "beta",
    "binarize",
)


def family(config: VAEConfig) -> loop.Family:
    bound = steps.VAESteps(config.likelihood, config.binarize == "dynamic")
    return loop.Family(
        "vae",
        bound.train_step,
        bound.eval_step,
        steps.PIXEL_RANGE,
        IDENTITY_FIELDS,
        vector_fields=("seed", "learning_rate", "beta"),
        eval_outputs=steps.EVAL_OUTPUTS,
    )


def build_model(config: VAEConfig, image_shape=(28, 28, 1)) -> VAE:
    return VAE(latent_dim=config.latent_dim, hidden_dim=config.hidden_dim, image_shape=image_shape)


def prepare_data(config: VAEConfig) -> data.Dataset:
    """The dataset, binarized as --binarize asks (the test split once, with a fixed seed)."""
    dataset = data.load_dataset(config.dataset, config.data_dir, config.data_source)
    if config.binarize == "none":
        return dataset
    # Fixed seeds, one per split, independent of --seed: every run sees the same binary data.
    train = dataset.train if config.binarize == "dynamic" else data.binarize_split(dataset.train, 1)
    return dataclasses.replace(
        dataset,
        train=train,
        test=data.binarize_split(dataset.test, 2),
        source=f"{dataset.source}, binarized ({config.binarize})",
    )


def _raw_test(config: VAEConfig) -> np.ndarray:
    """The test split's images before binarization."""
    return data.load_dataset(config.dataset, config.data_dir, config.data_source).test.images


def trial(config: VAEConfig, dataset: data.Dataset, early_stop=None) -> loop.Trial:
    model = build_model(config, dataset.info.image_shape)
    keys = loop.run_keys(config.seed)
    class_names = dataset.info.class_names

    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    _, latent_labels = dataset.fixed_test_examples(config.latent_points)
    pairs = min(config.interpolation_pairs, len(shown) // 2)
    cols = 8

    def media(state, epoch, outputs):
        arrays = jax.device_get(
            steps.pictures(
                state,
                shown_x,
                keys.sample,
                num_generated=config.num_generated,
                manifold_size=20 if config.latent_dim == 2 else 0,
                pairs=pairs,
                interpolation_steps=config.interpolation_steps,
            )
        )
        arrays = {k: images.to_uint8(v) for k, v in arrays.items()}
        generated = arrays["generated"]
        # z_mean of the first latent_points test images, from this epoch's validation pass.
        png, scatter = images.latent_plots(
            outputs["z_mean"], latent_labels, class_names, config.scatter_table_points
        )
        pictures = {
            "reconstructions": (
                images.reconstruction_grid(shown, arrays["reconstructions"], cols),
                f"epoch {epoch}: test images (odd rows) and decodings of their z_mean",
            ),
            "generated_images": (
                images.grid(generated, -(-len(generated) // cols), cols),
                f"epoch {epoch}: decoded from z ~ N(0, I), the same z every epoch",
            ),
            "latent_space": png,
        }
        if "manifold" in arrays:
            pictures["latent_manifold"] = (
                images.grid(arrays["manifold"], 20, 20),
                "decodings over the prior's 5%..95% quantiles (x right, y up)",
            )
        if pairs:
            pictures["interpolations"] = (
                images.grid(arrays["interpolations"], pairs, config.interpolation_steps),
                "each row: decodings along a straight line between two test images' z_mean",
            )
        return {"images": pictures, "scatters": {"latent_space_scatter": scatter}}

    evaluations = []  # Each: state -> {W&B key: float}, at the end of the run.
    if config.likelihood == "bernoulli" and config.binarize != "none":
        # A Bernoulli bound is a log-likelihood only of binary data: grey pixels get none.
        n = min(config.iwae_examples or len(dataset.test), len(dataset.test))
        test_x = jax.device_put(dataset.test.images[:n])

        def likelihood_bounds(state):
            bounds = likelihood.vae_test_bounds(
                state,
                data.scale(test_x, steps.PIXEL_RANGE),
                keys.evaluation,
                num_samples=config.iwae_samples,
                chunk_size=config.iwae_chunk,
                batch_size=min(config.iwae_batch, n),
            )
            return {
                "eval/iwae_nll": -float(bounds["iwae"]),
                "eval/neg_elbo": -float(bounds["elbo"]),
                "eval/iwae_samples": config.iwae_samples,
                "eval/iwae_examples": n,
            }

        evaluations.append(likelihood_bounds)

    prepare = None
    if config.eval_samples:
        # Samples are compared with the real (not binarized) test images: a Bernoulli VAE's
        # decoded means estimate the grey levels that the binarization draws from.
        raw = None if config.binarize == "none" else functools.partial(_raw_test, config)
        quality = classifier.SampleQuality(config, dataset, real_test=raw)
        prepare = quality.prepare

        def sample_quality(state):
            def sample(i):
                key = jax.random.fold_in(keys.evaluation, i)
                return steps.generate(state, key, classifier.EVAL_BATCH)

            return quality(sample, steps.PIXEL_RANGE)

        evaluations.append(sample_quality)

    def evaluate(state):
        return {k: v for fn in evaluations for k, v in fn(state).items()}

    init_state = functools.partial(steps.create_state, model, config.learning_rate, config.beta)
    return loop.Trial(
        config,
        init_state,
        media,
        evaluate if evaluations else None,
        early_stop,
        prepare,
        plots=True,
        media_examples=len(latent_labels),
    )


def comparison(config: VAEConfig, state, dataset: data.Dataset):
    """The fixed test images and the decodings of their z_mean (uint8)."""
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    recon = steps.reconstruct(state, jax.device_put(data.scale(shown, steps.PIXEL_RANGE)))
    return shown, images.to_uint8(jax.device_get(recon))


EXPERIMENT = loop.Experiment(
    "vae", VAEConfig, prepare_data, family, trial, EpochTrainer, comparison
)


def run(config: VAEConfig) -> dict:
    return EXPERIMENT.run(config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: run(parse_flags(VAEConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
