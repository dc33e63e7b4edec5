"""The conditional VAE: its size, that the label conditions it, its loss, pictures and
bounds on log p(x | y), and the experiment end to end."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cvae as cvae_experiment
from experiments import evaluate as evaluate_main
from genjax import losses, wandb_logging
from genjax.models.cvae import CVAE
from genjax.steps import cvae as steps
from tests.conftest import write_idx_dataset


def _state(latent_dim=2, hidden_dim=512, likelihood="mse"):
    model = CVAE(latent_dim, hidden_dim)
    return steps.create_state(model, 10, 1e-3, 1.0, jax.random.key(0), likelihood=likelihood)


def _inputs(n=4):
    x = jax.random.uniform(jax.random.key(1), (n, 28, 28, 1))
    return x, jnp.arange(n, dtype=jnp.int32) % 10


def test_parameter_count_matches_keras():
    # benchmarks/keras_cvae.build().count_params() in Keras 3, computed once: encoder
    # (784+10)*512+512, z_mean and z_log_var 512*2+2 each, decoder (2+10)*512+512, 512*784+784.
    state = _state()
    assert sum(math.prod(p.shape) for p in jax.tree.leaves(state.params)) == 817_940
    assert state.params["encoder_hidden"]["kernel"].shape == (794, 512)
    assert state.params["decoder_hidden"]["kernel"].shape == (12, 512)


def test_shapes_and_the_label_changes_every_output():
    state = _state()
    x, labels = _inputs()

    def forward(labels):
        y = steps.one_hot(state, labels)
        return state.apply_fn({"params": state.params}, x, y, rngs={"latent": jax.random.key(2)})

    logits, mean, log_var = forward(labels)
    chex.assert_shape(logits, (4, 28, 28, 1))
    chex.assert_shape((mean, log_var), (4, 2))
    other_logits, other_mean, _ = forward((labels + 1) % 10)
    # The label enters the encoder (the code moves) and the decoder (the same z decodes
    # otherwise).
    assert not np.allclose(mean, other_mean)
    assert not np.allclose(logits, other_logits)
    z = jnp.zeros((4, 2))
    a = steps.decode(state, z, steps.one_hot(state, labels))
    b = steps.decode(state, z, steps.one_hot(state, (labels + 1) % 10))
    assert np.abs(np.asarray(a) - np.asarray(b)).max(axis=(1, 2, 3)).min() > 1e-4


def test_the_loss_is_the_vaes_given_the_label():
    state = _state().replace(hparams={"beta": jnp.float32(0.5)})
    x, labels = _inputs(3)
    terms, z_mean = steps._terms(
        state.params, state, {"image": x, "label": labels}, jax.random.key(3)
    )
    _, latent_key = jax.random.split(jax.random.key(3))
    logits, mean, log_var = state.apply_fn(
        {"params": state.params}, x, steps.one_hot(state, labels), rngs={"latent": latent_key}
    )
    recon = 784 * jnp.mean(jnp.square(x - jax.nn.sigmoid(logits)).reshape(3, -1), axis=1)
    kl = losses.gaussian_kl(mean, log_var)
    np.testing.assert_allclose(terms["reconstruction_loss"], recon, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], recon + 0.5 * kl, rtol=1e-5)
    np.testing.assert_allclose(z_mean, mean)
    new_state, metrics = steps.train_step(state, {"image": x, "label": labels}, jax.random.key(4))
    assert int(new_state.step) == 1 and set(metrics) == {"loss", "reconstruction_loss", "kl_loss"}


def test_by_class_rows_share_each_columns_z():
    state = _state(hidden_dim=32)
    x, labels = _inputs(6)
    out = steps.pictures(
        state,
        x,
        labels,
        jax.random.key(5),
        num_generated=12,
        class_columns=3,
        manifold_size=2,
        pairs=2,
        interpolation_steps=4,
    )
    chex.assert_shape(out["by_class"], (30, 28, 28, 1))
    z = jax.random.normal(jax.random.fold_in(jax.random.key(5), 1), (3, 2))
    for c in (0, 7):
        row = steps.decode(state, z, steps.one_hot(state, jnp.full(3, c)))
        np.testing.assert_allclose(out["by_class"][3 * c : 3 * c + 3], row, rtol=1e-5, atol=1e-6)
    chex.assert_shape(out["manifold"], (10 * 4, 28, 28, 1))
    chex.assert_shape(out["generated"], (12, 28, 28, 1))
    # An interpolation ends at the reconstructions of its two images.
    chex.assert_shape(out["interpolations"], (8, 28, 28, 1))
    np.testing.assert_allclose(out["interpolations"][0], out["reconstructions"][0], atol=1e-5)
    np.testing.assert_allclose(out["interpolations"][3], out["reconstructions"][1], atol=1e-5)


def test_bounds_on_log_p_x_given_y():
    state = _state(hidden_dim=32, likelihood="bernoulli")
    x = jax.random.bernoulli(jax.random.key(6), 0.3, (5, 28, 28, 1)).astype(jnp.float32)
    labels = jnp.arange(5, dtype=jnp.int32)
    kwargs = dict(num_samples=20, chunk_size=10)
    bounds = steps.likelihood_bounds(state, x, labels, jax.random.key(7), batch_size=3, **kwargs)
    assert bounds["elbo"] <= bounds["iwae"] < 0
    # Two batches, the last padded: the same figures as the batches computed alone.
    key0, key1 = (jax.random.fold_in(jax.random.key(7), i) for i in range(2))
    first = steps._bounds(state, x[:3], labels[:3], key0, **kwargs)
    padded = jnp.array([3, 4, 4])
    second = steps._bounds(state, x[padded], labels[padded], key1, **kwargs)
    expected = (np.sum(first["iwae"]) + np.sum(second["iwae"][:2])) / 5
    np.testing.assert_allclose(bounds["iwae"], expected, rtol=1e-5)
    other = steps.likelihood_bounds(
        state, x, (labels + 1) % 10, jax.random.key(7), batch_size=3, **kwargs
    )
    assert other["iwae"] != bounds["iwae"]  # log p(x | y) depends on y.


IMAGES = [
    "reconstructions",
    "generated_images",
    "generated_by_class",
    "latent_space",
    "latent_manifold",
    "interpolations",
]


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, feature_net):
    workdir = tmp_path / "cvae"
    small = write_idx_dataset(tmp_path / "data", n_train=256, n_test=200)
    argv = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--epochs=2",
        "--steps_per_epoch=8",
        "--eval_batch_size=100",
        "--likelihood=bernoulli",
        "--binarize=dynamic",
        "--latent_points=200",
        "--scatter_table_interval=1",
        "--class_columns=4",
        "--iwae_samples=10",
        "--iwae_chunk=5",
        "--iwae_examples=50",
        "--iwae_batch=25",
        "--eval_samples=100",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert cvae_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    back = wandb_logging.read_run(summary["wandb_run"]["dir"])
    assert back["state"] == "finished" and back["config"]["class_columns"] == 4
    history = back["history"]
    assert [h["_step"] for h in history] == [1, 2]
    for h in history:
        for key in ("train/loss", "train/kl_loss", "val/loss", "val/reconstruction_loss"):
            assert math.isfinite(h[key]), key
        for key in IMAGES:
            assert h[f"{key}._type"] == "image-file", key
        assert h["latent_space_scatter_table.nrows"] == 200
    last = history[-1]
    assert last["latent_manifold.width"] == 5 * (10 * 30 + 2 + 2) + 2  # 2x5 panels of 10x10.
    # log p(x | y) in nats, and the conditional sample quality, with the last epoch.
    assert last["eval/iwae_nll"] <= last["eval/neg_elbo"] + 1e-3
    assert 50 < last["eval/iwae_nll"] < 600
    assert 0 < last["eval/fid"] < 1e4 and 0 <= last["eval/recall"] <= 1
    assert 0 <= last["eval/class_accuracy_worst"] <= last["eval/class_accuracy"] <= 1
    for key in ("eval/fid", "eval/class_accuracy", "eval/iwae_nll"):
        assert summary[key] == last[key], key
    assert "eval/fid" not in history[0]
    assert (workdir / "images" / "generated_by_class.png").exists()
    # experiments.evaluate: the same figures from the checkpoint, without training.
    assert evaluate_main.main([f"--workdir={workdir}", "--progress=false"]) == 0
    evaluated = json.loads((workdir / "evaluation.json").read_text())
    for key in ("eval/fid", "eval/class_accuracy", "eval/iwae_nll"):
        assert evaluated[key] == pytest.approx(summary[key], rel=1e-6), key
