"""The adversarial autoencoder: Keras-GAN's sizes, each phase of its iteration moving only its
network, the priors' moments, and the experiment end to end."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import aae as aae_experiment
from experiments import evaluate as evaluate_main
from genjax import wandb_logging
from genjax.models import aae as model
from genjax.models.aae import AdversarialAutoencoder, LatentDiscriminator
from genjax.steps import aae as steps
from tests.conftest import write_idx_dataset

ENCODER = ("encoder_hidden_0", "encoder_hidden_1", "mu", "log_var")


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _state(prior="gaussian", latent_dim=10):
    return steps.create_state(
        AdversarialAutoencoder(latent_dim),
        LatentDiscriminator(),
        2e-4,
        0.5,
        jax.random.key(0),
        prior=prior,
    )


def _images(n=8):
    return jax.random.uniform(jax.random.key(1), (n, 28, 28, 1), minval=-1.0, maxval=1.0)


def test_parameter_counts_match_keras_gan():
    # benchmarks/keras_aae.py's encoder(), decoder() and discriminator().count_params() in
    # Keras 3, computed once: 674,836, 670,480 and 137,217.
    ae = _state().autoencoder.params
    assert _count({k: ae[k] for k in ENCODER}) == 674_836
    assert _count({k: v for k, v in ae.items() if k not in ENCODER}) == 670_480
    assert _count(_state().discriminator.params) == 137_217


def test_shapes_and_ranges():
    state = _state()
    x = _images()
    reconstruction, z = state.autoencoder.apply_fn(
        {"params": state.autoencoder.params}, x, rngs={"latent": jax.random.key(2)}
    )
    chex.assert_shape(reconstruction, (8, 28, 28, 1))
    chex.assert_shape(z, (8, 10))
    assert float(jnp.abs(reconstruction).max()) <= 1.0
    d = state.discriminator
    chex.assert_shape(d.apply_fn({"params": d.params}, z), (8,))
    # The code is sampled: another eps, another z; mu reconstructs without noise.
    assert not np.allclose(z, steps.codes(state, x, jax.random.key(3)))
    chex.assert_trees_all_equal(steps.reconstruct(state, x), steps.reconstruct(state, x))


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _all_moved(after, before) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), after, before)))


def test_the_discriminator_phase_moves_only_the_discriminator():
    state = _state()
    before = _copy(state)
    after, metrics = jax.jit(steps.discriminator_phase)(
        state, _images(), jax.random.key(4), jax.random.key(5)
    )
    chex.assert_trees_all_equal(after.autoencoder, before.autoencoder)
    assert _all_moved(after.discriminator.params, before.discriminator.params)
    assert int(after.discriminator.step) == 2  # Two train_on_batch calls.
    assert 0 <= metrics["discriminator_accuracy"] <= 100
    chex.assert_tree_all_finite(metrics)


def test_the_autoencoder_phase_moves_only_encoder_and_decoder():
    state = _state()
    before = _copy(state)
    after, metrics = jax.jit(steps.autoencoder_phase)(state, _images(), jax.random.key(4))
    chex.assert_trees_all_equal(after.discriminator, before.discriminator)
    assert _all_moved(after.autoencoder.params, before.autoencoder.params)
    np.testing.assert_allclose(
        metrics["autoencoder_loss"],
        0.999 * metrics["reconstruction_loss"] + 0.001 * metrics["adversarial_loss"],
        rtol=1e-6,
    )


def test_train_step_same_key_same_state_and_keras_gans_line():
    batch = {"image": _images(), "label": jnp.zeros(8, jnp.int32)}
    a_state, a = steps.train_step(_state("mixture"), batch, jax.random.key(6))
    b_state, b = steps.train_step(_state("mixture"), batch, jax.random.key(6))
    chex.assert_trees_all_equal(jax.tree.leaves((a_state, a)), jax.tree.leaves((b_state, b)))
    assert int(a_state.step) == 1
    line = aae_experiment.report_line(1, {f"train/{k}": float(v) for k, v in a.items()})
    assert line.startswith("1 [D loss: ") and "%] [G loss: " in line and ", mse: " in line
    out = steps.eval_step(a_state, batch, jax.random.key(7))
    assert {k: v.shape for k, v in out.items()} == {
        k: (8,)
        for k in (
            "autoencoder_loss",
            "reconstruction_loss",
            "adversarial_loss",
            "d_prior",
            "d_codes",
            "discriminator_accuracy",
        )
    }


def test_the_mixture_prior_moments():
    n = 200_000
    r2 = model.MIXTURE_RADIUS**2
    spread = model.MIXTURE_RADIAL_STD**2 + model.MIXTURE_TANGENTIAL_STD**2
    z = np.asarray(model.sample_prior(jax.random.key(8), "mixture", n, 2), np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.02)
    # Ten components evenly around the circle: the covariance is isotropic.
    np.testing.assert_allclose(np.cov(z.T), (r2 + spread) / 2 * np.eye(2), atol=0.03)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1).mean(), model.MIXTURE_RADIUS, atol=0.02)
    sector = np.round(np.arctan2(z[:, 1], z[:, 0]) / (2 * np.pi / 10)).astype(int) % 10
    np.testing.assert_allclose(np.bincount(sector, minlength=10) / n, 0.1, atol=0.005)
    # Above 2-D every pair holds the same component: pairs correlate through its angle
    # (cov R^2 / 2); an odd last coordinate is N(0, 1), independent.
    z = np.asarray(model.sample_prior(jax.random.key(9), "mixture", n, 5), np.float64)
    cov = np.cov(z.T)
    np.testing.assert_allclose(np.diag(cov), [(r2 + spread) / 2] * 4 + [1.0], atol=0.03)
    np.testing.assert_allclose(cov[0, 2], r2 / 2, atol=0.03)
    np.testing.assert_allclose(cov[0, 3], 0.0, atol=0.03)
    np.testing.assert_allclose(cov[4, :4], 0.0, atol=0.02)
    g = np.asarray(model.sample_prior(jax.random.key(10), "gaussian", n, 3))
    np.testing.assert_allclose(np.cov(g.T), np.eye(3), atol=0.02)


def test_a_one_dimensional_mixture_is_refused(capsys):
    assert aae_experiment.main(["--prior=mixture", "--latent_dim=1"]) == 2
    assert "--latent_dim=1: the mixture prior" in capsys.readouterr().err


KEYS = [
    "train/discriminator_loss",
    "train/discriminator_accuracy",
    "train/autoencoder_loss",
    "train/reconstruction_loss",
    "train/adversarial_loss",
    "train/d_prior",
    "train/d_codes",
]


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    workdir = tmp_path / "aae"
    small = write_idx_dataset(tmp_path / "data", n_train=256, n_test=200)
    argv = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--iterations=4",
        "--gen_interval=2",
        "--eval_interval=4",
        "--scatter_table_interval=4",
        "--latent_dim=2",
        "--prior=mixture",
        "--latent_points=150",
        "--eval_samples=100",
        "--val_examples=32",
        "--eval_batch_size=16",
        "--batch_size=16",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert aae_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    back = wandb_logging.read_run(summary["wandb_run"]["dir"])
    assert back["state"] == "finished" and back["config"]["prior"] == "mixture"
    history = back["history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    for h in history:
        for key in KEYS:
            assert math.isfinite(h[key]), key
    for h in history[1], history[3]:
        for key in ("reconstructions", "generated_images", "latent_space"):
            assert h[f"{key}._type"] == "image-file", key
    assert history[3]["generated_images.width"] == 5 * 30 + 2
    assert "latent_space_scatter_table.nrows" not in history[1]
    assert history[3]["latent_space_scatter_table.nrows"] == 150
    last = history[3]
    for key in ("val/reconstruction_loss", "val/d_prior", "val/discriminator_accuracy"):
        assert math.isfinite(last[key]), key
    assert 0 < last["eval/fid"] < 1e4 and 0 <= last["eval/precision"] <= 1
    assert summary["eval/fid"] == last["eval/fid"]
    assert "eval/fid" not in history[1]
    err = capsys.readouterr().err
    assert "2 [D loss: " in err and "4 [D loss: " in err and ", mse: " in err
    # experiments.evaluate: the same figures from the checkpoint, without training.
    assert evaluate_main.main([f"--workdir={workdir}", "--progress=false"]) == 0
    evaluated = json.loads((workdir / "evaluation.json").read_text())
    for key in ("eval/fid", "eval/precision", "eval/recall"):
        assert evaluated[key] == pytest.approx(summary[key], rel=1e-6), key
