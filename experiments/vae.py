"""The report's variational autoencoder, with generation, latent pictures and likelihoods.

    python -m experiments.vae --latent_dim=2 --epochs=20
    python -m experiments.vae --likelihood=bernoulli --binarize=dynamic   # nats, IWAE bound

Running the same command again with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys

import jax

from genjax import cli, data, images, run
from genjax.config import VAEConfig as Config
from genjax.evaluation import likelihood
from genjax.evaluation.feature_net import SampleQuality, Sampler
from genjax.loops import epochs
from genjax.models.autoencoder import VAE
from genjax.steps import vae as steps

NAME = "vae"
# Settings that define a run besides the shared ones: a workdir refuses others.
IDENTITY = ("latent_dim", "hidden_dim", "likelihood", "beta", "binarize")
# Settings held in the state as arrays: trials that differ only in these train as one program.
VECTOR_FIELDS = ("seed", "learning_rate", "beta")
# Where no bound is reported: the one genjax computes is a Bernoulli likelihood's.
LIKELIHOOD = "none at these settings: --likelihood=bernoulli --binarize=dynamic give one"


def load_data(config: Config) -> data.Dataset:
    """The dataset, binarized as --binarize asks (the test split once, with a fixed seed)."""
    dataset = data.load_dataset(config.dataset, config.data_dir, config.data_source)
    if config.binarize == "none":
        return dataset
    # Fixed seeds, one per split, independent of --seed: every run sees the same binary data.
    train_split = dataset.train
    if config.binarize == "fixed":
        train_split = data.binarize_split(dataset.train, 1)
    return dataclasses.replace(
        dataset,
        train=train_split,
        test=data.binarize_split(dataset.test, 2),
        source=f"{dataset.source}, binarized ({config.binarize})",
        raw_test=dataset.test,
    )


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """The model, its optimizer and loss settings, freshly initialised."""
    model = VAE(
        latent_dim=config.latent_dim,
        hidden_dim=config.hidden_dim,
        image_shape=info.image_shape,
    )
    return steps.create_state(
        model,
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
    states = [create_state(c, dataset.info, run.keys(c.seed).init) for c in configs]
    total = epochs.total_steps(config, dataset)
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))
    _, latent_labels = dataset.fixed_test_examples(config.latent_points)
    pairs = min(config.interpolation_pairs, len(shown) // 2)
    cols = 8

    def pictures(config, state, epoch, outputs):
        arrays = steps.pictures(
            state,
            shown_x,
            run.keys(config.seed).sample,
            num_generated=config.num_generated,
            manifold_size=20 if config.latent_dim == 2 else 0,
            pairs=pairs,
            interpolation_steps=config.interpolation_steps,
        )
        arrays = {k: images.to_uint8(v) for k, v in jax.device_get(arrays).items()}
        generated = arrays["generated"]
        # z_mean of the first latent_points test images, from this epoch's validation pass.
        png, scatter = images.latent_plots(
            outputs["z_mean"], latent_labels, dataset.info.class_names, config.scatter_table_points
        )
        shown_pictures = {
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
            shown_pictures["latent_manifold"] = (
                images.grid(arrays["manifold"], 20, 20),
                "decodings over the prior's 5%..95% quantiles (x right, y up)",
            )
        if pairs:
            shown_pictures["interpolations"] = (
                images.grid(arrays["interpolations"], pairs, config.interpolation_steps),
                "each row: decodings along a straight line between two test images' z_mean",
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


def reports_likelihood(config: Config) -> bool:
    """A Bernoulli bound is a log-likelihood only of binary data: grey pixels get none."""
    return config.likelihood == "bernoulli" and config.binarize != "none"


def evaluate(config: Config, state, dataset: data.Dataset, quality=None) -> dict[str, float]:
    """The end-of-run figures: the test likelihood bounds (Bernoulli, binarized) and
    eval/fid, eval/precision, eval/recall of samples from the prior (eval_samples > 0).

    Samples are compared with the real (not binarized) test images: a Bernoulli VAE's
    decoded means estimate the grey levels that the binarization draws from."""
    key = run.keys(config.seed).evaluation
    figures = {}
    if reports_likelihood(config):
        n = min(config.iwae_examples or len(dataset.test), len(dataset.test))
        test_x = data.scale(jax.device_put(dataset.test.images[:n]), steps.PIXEL_RANGE)
        bounds = likelihood.vae_test_bounds(
            state,
            test_x,
            key,
            num_samples=config.iwae_samples,
            chunk_size=config.iwae_chunk,
            batch_size=min(config.iwae_batch, n),
        )
        figures |= {
            "eval/iwae_nll": -float(bounds["iwae"]),
            "eval/neg_elbo": -float(bounds["elbo"]),
            "eval/iwae_samples": config.iwae_samples,
            "eval/iwae_examples": n,
        }
    if config.eval_samples:
        quality = quality or SampleQuality(config, dataset)
        figures |= quality.of(sampler(config, state, dataset), key)
    return figures


def sampler(config: Config, state, dataset: data.Dataset) -> Sampler:
    """Decodings of z ~ N(0, I), the prior."""
    return Sampler(lambda key, labels: steps.generate(state, key, len(labels)), steps.PIXEL_RANGE)


def comparison(config: Config, state, dataset: data.Dataset):
    """For a sweep's picture: the fixed test images and the decodings of their z_mean."""
    shown, _ = dataset.fixed_test_examples(config.num_reconstructions)
    recon = steps.reconstruct(state, jax.device_put(data.scale(shown, steps.PIXEL_RANGE)))
    return shown, images.to_uint8(jax.device_get(recon))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
