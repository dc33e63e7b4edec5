"""The VAE: its loss terms, gradients, likelihood bounds, sampling, and the experiment."""

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import evaluate as evaluate_main
from experiments import vae as vae_experiment
from experiments import vae_sample
from genjax import data, losses, wandb_logging
from genjax.evaluation import likelihood
from genjax.models.autoencoder import VAE
from genjax.steps import fused
from genjax.steps import vae as steps


def _state(latent_dim=2, hidden_dim=512, seed=0):
    return steps.create_state(VAE(latent_dim, hidden_dim), 1e-3, 1.0, jax.random.key(seed))


def test_parameter_count_and_shapes():
    model = VAE(latent_dim=2)
    shapes = jax.eval_shape(
        model.init,
        {"params": jax.random.key(0), "latent": jax.random.key(1)},
        jnp.zeros((1, 28, 28, 1)),
    )
    # encoder 784*512+512, z_mean and z_log_var 512*2+2 each, decoder 2*512+512, 512*784+784.
    assert sum(math.prod(p.shape) for p in jax.tree.leaves(shapes)) == 807_700
    state = _state()
    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    logits, mean, log_var = state.apply_fn(
        {"params": state.params}, x, rngs={"latent": jax.random.key(2)}
    )
    chex.assert_shape(logits, (4, 28, 28, 1))
    chex.assert_shape((mean, log_var), (4, 2))
    chex.assert_tree_all_finite((logits, mean, log_var))


def test_the_latent_draw_uses_its_own_named_stream():
    state = _state()
    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))

    def logits(key):
        return state.apply_fn({"params": state.params}, x, rngs={"latent": key})[0]

    chex.assert_trees_all_equal(logits(jax.random.key(5)), logits(jax.random.key(5)))
    assert not np.allclose(logits(jax.random.key(5)), logits(jax.random.key(6)))
    with pytest.raises(Exception, match="latent"):
        state.apply_fn({"params": state.params}, x, rngs={"dropout": jax.random.key(0)})


def test_the_report_loss_is_784_times_mse_plus_kl():
    state = _state()
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    terms, _ = steps.loss_terms(state.params, state, {"image": x}, jax.random.key(2))
    _, latent_key = jax.random.split(jax.random.key(2))
    logits, mean, log_var = state.apply_fn({"params": state.params}, x, rngs={"latent": latent_key})
    mse = jnp.mean(jnp.square(x - jax.nn.sigmoid(logits)).reshape(3, -1), axis=1)
    np.testing.assert_allclose(terms["reconstruction_loss"], 784 * mse, rtol=1e-5)
    np.testing.assert_allclose(
        terms["loss"], 784 * mse + losses.gaussian_kl(mean, log_var), rtol=1e-5
    )


def test_reparameterized_gradient_matches_finite_differences():
    """With the latent key fixed, the loss is a smooth function of the parameters through
    z = mean + exp(log_var / 2) * eps; its gradient must match central differences (float64)."""
    with jax.enable_x64(True):
        state = _state(latent_dim=2, hidden_dim=16).replace(likelihood="bernoulli")
        params = jax.tree.map(lambda p: p.astype(jnp.float64), state.params)
        x = jax.random.bernoulli(jax.random.key(3), 0.3, (8, 28, 28, 1)).astype(jnp.float64)

        def loss(params):
            terms, _ = steps.loss_terms(params, state, {"image": x}, jax.random.key(4))
            return jnp.mean(terms["loss"])

        grads = jax.grad(loss)(params)
        step = 1e-5
        for layer in ("z_mean", "z_log_var", "encoder_hidden"):
            d = jax.random.normal(jax.random.key(5), params[layer]["kernel"].shape, jnp.float64)
            d = d / jnp.linalg.norm(d)

            def moved(sign, layer=layer, d=d):
                new = jax.tree.map(lambda p: p, params)
                new[layer] = dict(new[layer], kernel=params[layer]["kernel"] + sign * step * d)
                return new

            numeric = (loss(moved(1.0)) - loss(moved(-1.0))) / (2 * step)
            analytic = jnp.sum(grads[layer]["kernel"] * d)
            np.testing.assert_allclose(numeric, analytic, rtol=1e-5, atol=1e-7)


def _linear_gaussian(dim_x=5, sigma=0.5):
    """z ~ N(0, I_2), x | z ~ N(W z + b, sigma^2 I) with orthogonal W columns, so that the exact
    posterior is a diagonal Gaussian and log p(x) = log N(x; b, W W^T + sigma^2 I)."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(dim_x, 2)))
    w = q * np.array([2.0, 0.7])
    b = np.linspace(-1, 1, dim_x)
    x = np.random.default_rng(1).normal(size=(6, dim_x))
    cov = w @ w.T + sigma**2 * np.eye(dim_x)
    diff = x - b
    exact = -0.5 * (
        dim_x * np.log(2 * np.pi)
        + np.linalg.slogdet(cov)[1]
        + np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
    )
    post_prec = 1.0 + np.sum(w**2, axis=0) / sigma**2  # diagonal: W^T W is diagonal
    post_mean = (diff @ w / sigma**2) / post_prec
    w, b = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)

    def log_likelihood(x, z):
        mu = z @ w.T + b
        return losses.gaussian_log_density(x, mu, jnp.full_like(mu, 2 * np.log(sigma)))

    posterior = (
        jnp.asarray(post_mean, jnp.float32),
        jnp.asarray(np.broadcast_to(-np.log(post_prec), post_mean.shape), jnp.float32),
    )
    return jnp.asarray(x, jnp.float32), exact, log_likelihood, posterior


def test_iwae_is_exact_with_the_true_posterior():
    x, exact, log_likelihood, posterior = _linear_gaussian()
    bounds = likelihood.iwae_bound(
        jax.random.key(0), x, lambda _: posterior, log_likelihood, num_samples=20, chunk_size=5
    )
    np.testing.assert_allclose(bounds["iwae"], exact, atol=1e-4)
    np.testing.assert_allclose(bounds["elbo"], exact, atol=1e-4)


def test_iwae_bounds_the_elbo_and_grows_with_k():
    x, exact, log_likelihood, (mean, log_var) = _linear_gaussian()

    def poor(_):  # A posterior that is off: shifted, too wide.
        return mean + 0.5, log_var + 1.0

    values = {}
    for k in (1, 10, 100, 2000):
        # E[IWAE_k] grows with k; average 200 independent estimates so that noise does not
        # hide it.
        def estimate(key, k=k):
            return likelihood.iwae_bound(key, x, poor, log_likelihood, k, min(k, 100))

        b = jax.vmap(estimate)(jax.random.split(jax.random.key(k), 200))
        values[k] = float(jnp.mean(b["iwae"]))
        elbo = float(jnp.mean(b["elbo"]))  # The k-sample ELBO estimates E[IWAE_1].
        np.testing.assert_allclose(elbo, values.get(1, elbo), atol=0.25)
    assert values[1] < values[10] < values[100] < values[2000] <= float(np.mean(exact)) + 0.01
    assert float(np.mean(exact)) - values[2000] < 0.05


def test_same_key_same_samples():
    state = _state()
    a = steps.generate(state, jax.random.key(7), 8)
    chex.assert_shape(a, (8, 28, 28, 1))
    chex.assert_trees_all_equal(a, steps.generate(state, jax.random.key(7), 8))
    assert not np.allclose(a, steps.generate(state, jax.random.key(8), 8))


def test_manifold_and_interpolation_points():
    grid = steps.manifold_grid(20)
    chex.assert_shape(grid, (400, 2))
    np.testing.assert_allclose(grid[0], [-1.6448536, 1.6448536], rtol=1e-5)  # 5% / 95%
    line = steps.interpolation_points(jnp.zeros((3, 2)), jnp.ones((3, 2)), 5)
    chex.assert_shape(line, (3, 5, 2))
    np.testing.assert_allclose(line[0, :, 0], [0, 0.25, 0.5, 0.75, 1.0])


def test_the_pictures_program_draws_what_the_separate_functions_draw():
    state = _state(latent_dim=2, hidden_dim=32)
    shown = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
    key = jax.random.key(2)
    out = steps.pictures(
        state, shown, key, num_generated=5, manifold_size=4, pairs=2, interpolation_steps=3
    )
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    close(out["reconstructions"], steps.reconstruct(state, shown))
    close(out["generated"], steps.generate(state, key, 5))
    close(out["manifold"], steps.decode(state, steps.manifold_grid(4)))
    ends, _ = steps.encode(state, shown[:4])
    line = steps.interpolation_points(ends[0::2], ends[1::2], 3)
    close(out["interpolations"], steps.decode(state, line.reshape(-1, 2)))
    chex.assert_shape(out["interpolations"], (6, 28, 28, 1))
    bare = steps.pictures(
        state, shown, key, num_generated=5, manifold_size=0, pairs=0, interpolation_steps=3
    )
    assert set(bare) == {"reconstructions", "generated"}


def test_the_validation_pass_keeps_the_posterior_means_it_plots():
    """The latent pictures' codes come from the validation pass: z_mean, not the sampled z."""
    state = _state(latent_dim=2, hidden_dim=32)
    images = (np.arange(50 * 784) % 251).astype(np.uint8).reshape(50, 28, 28, 1)
    out = fused.evaluate(
        state,
        jnp.asarray(images),
        jnp.zeros(50, jnp.int32),
        jax.random.key(3),
        eval_step=steps.eval_step,
        batch_size=16,
        pixel_range=steps.PIXEL_RANGE,
        outputs=steps.EVAL_OUTPUTS,
        keep=20,
    )
    z_mean, _ = steps.encode(state, data.scale(images[:20], steps.PIXEL_RANGE))
    np.testing.assert_allclose(out["z_mean"], z_mean, rtol=1e-5, atol=1e-6)
    assert set(out) == {"loss", "reconstruction_loss", "kl_loss", "z_mean"}


KEYS = [
    "train/loss",
    "train/reconstruction_loss",
    "train/kl_loss",
    "val/loss",
    "val/reconstruction_loss",
    "val/kl_loss",
]
IMAGES = [
    "reconstructions",
    "generated_images",
    "latent_space",
    "latent_manifold",
    "interpolations",
]


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    workdir = tmp_path / "vae"
    argv = [
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--epochs=2",
        "--steps_per_epoch=40",
        "--likelihood=bernoulli",
        "--binarize=dynamic",
        "--latent_points=500",
        "--scatter_table_interval=1",
        "--iwae_samples=20",
        "--iwae_chunk=10",
        "--iwae_examples=200",
        "--eval_samples=150",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert vae_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    back = wandb_logging.read_run(summary["wandb_run"]["dir"])
    assert back["config"]["likelihood"] == "bernoulli" and back["state"] == "finished"
    history = back["history"]
    assert [h["_step"] for h in history] == [1, 2]
    for h in history:
        for key in KEYS:
            assert math.isfinite(h[key]), key
        np.testing.assert_allclose(
            h["val/loss"], h["val/reconstruction_loss"] + h["val/kl_loss"], rtol=1e-5
        )
        for key in IMAGES:
            assert h[f"{key}._type"] == "image-file", key
        assert h["latent_space_scatter_table.nrows"] == 500  # Every epoch, as asked.
    assert history[1]["latent_manifold.width"] == 20 * 30 + 2
    assert history[1]["generated_images.width"] == 8 * 30 + 2
    # Likelihood figures, in nats, with the last epoch and in summary.json.
    last = history[-1]
    assert last["eval/iwae_nll"] <= last["eval/neg_elbo"] + 1e-3
    assert 50 < last["eval/iwae_nll"] < 600
    assert summary["eval/iwae_nll"] == last["eval/iwae_nll"]
    assert summary["eval/iwae_samples"] == 20
    # The FID of its samples beside the likelihood (against the unbinarized test images).
    assert "eval/fid" not in history[0]
    assert 0 < last["eval/fid"] < 1e4 and 0 <= last["eval/recall"] <= 1
    assert summary["eval/fid"] == last["eval/fid"] and summary["eval/samples"] == 150
    assert evaluate_main.main([f"--workdir={workdir}", "--progress=false"]) == 0
    evaluated = json.loads((workdir / "evaluation.json").read_text())
    for key in ("eval/fid", "eval/precision", "eval/recall", "eval/iwae_nll"):
        assert evaluated[key] == pytest.approx(summary[key], rel=1e-6), key

    # Generation without retraining, from the checkpoint; the same seed, the same picture.
    out1, out2 = tmp_path / "a.png", tmp_path / "b.png"
    assert vae_sample.main([f"--workdir={workdir}", "--num=12", f"--out={out1}"]) == 0
    assert vae_sample.main([f"--workdir={workdir}", "--num=12", f"--out={out2}"]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    from PIL import Image

    assert Image.open(out1).size == (4 * 30 + 2, 3 * 30 + 2)  # 12 images: 3 rows of 4
    assert "12 images from step 80" in capsys.readouterr().out


@pytest.mark.slow
def test_report_defaults_log_no_likelihood_and_no_manifold_above_2d(wandb_home, tmp_path):
    workdir = tmp_path / "vae"
    argv = [
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--epochs=1",
        "--steps_per_epoch=20",
        "--latent_dim=3",
        "--latent_points=300",
        "--eval_samples=0",
        "--progress=false",
    ]
    assert vae_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    back = wandb_logging.read_run(summary["wandb_run"]["dir"])
    h = back["history"][0]
    assert "latent_manifold._type" not in h and "eval/iwae_nll" not in h
    assert "PCA of 3-D codes" in back["charts"]["latent_space_scatter"]["stringSettings"]["title"]
    # The report's loss: 784 * MSE is at most 784 per image.
    assert 0 < summary["val/reconstruction_loss"] < 784


def test_sampling_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert vae_sample.main([f"--workdir={tmp_path / 'none'}"]) == 2
    assert "holds no checkpoints/" in capsys.readouterr().err
