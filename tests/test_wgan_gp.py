"""WGAN-GP: Keras-GAN's wgan_gp.py layers and parameter counts, the gradient penalty against
its closed form, its iteration (n_critic real batches, each phase moving only its network),
and an end-to-end run read back from W&B."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import wgan_gp as wgan_experiment
from genjax import data, wandb_logging
from genjax.config import WGANGPConfig
from genjax.models.wgan_gp import Critic, Generator
from genjax.steps import wgan_gp as steps
from tests.conftest import write_idx_dataset

B, N_CRITIC = 4, 2  # Small: the critic's double backward pass is slow to compile on CPU.

critic_phase = jax.jit(steps.critic_phase)
critic_update = jax.jit(steps.critic_update)
generator_phase = jax.jit(steps.generator_phase)


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _state(seed=0):
    return steps.create_state(Generator(), Critic(), 5e-5, N_CRITIC, 10.0, jax.random.key(seed))


@pytest.fixture(scope="module")
def images(real_fashion_mnist):
    return data.scale(jnp.asarray(real_fashion_mnist.train.images[: B * N_CRITIC]), (-1.0, 1.0))


def test_parameter_counts_match_keras_gan():
    """Keras 3's count_params() of Keras-GAN's wgan_gp.py models, computed once with Keras:
    generator 1,028,673 of which 1,028,289 trainable (BN moving statistics are not); critic
    100,097 of which 99,649 trainable."""
    state = _state()
    g, c = state.generator, state.critic
    assert _count(g.params) == 1_028_289 and _count(g.params) + _count(g.batch_stats) == 1_028_673
    assert _count(c.params) == 99_649 and _count(c.params) + _count(c.batch_stats) == 100_097


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form():
    """C(x) = <w, x> + b has input gradient w everywhere: the penalty is (1 - ||w||)^2 for
    every interpolate."""
    w = jax.random.normal(jax.random.key(0), (28, 28, 1)) * 0.05
    x = jax.random.normal(jax.random.key(1), (5, 28, 28, 1))

    def critic(x):
        return jnp.sum(x * w, axis=(1, 2, 3)) + 0.3, None

    penalty, _ = steps.gradient_penalty(critic, x)
    expected = (1.0 - jnp.sqrt(jnp.sum(w**2))) ** 2
    chex.assert_trees_all_close(penalty, jnp.full((5,), expected), rtol=1e-5)


def test_rmsprop_is_keras_2s():
    """Keras 2: a = 0.9 a + 0.1 g^2; p -= lr g / (sqrt(a) + 1e-7), epsilon outside the root."""
    g = jnp.array([1e-6, 0.5])
    updates, _ = steps.rmsprop(5e-5).update(g, steps.rmsprop(5e-5).init(g))
    expected = -5e-5 * g / (jnp.sqrt(0.1 * g**2) + 1e-7)
    chex.assert_trees_all_close(updates, expected, rtol=1e-5)


def test_each_phase_moves_only_its_network(images):
    state = _state()
    before = jax.tree.map(jnp.copy, state)
    after_c, c_metrics = critic_phase(state, images, jax.random.key(1))
    for part in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_equal(
            getattr(after_c.generator, part), getattr(before.generator, part)
        )
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), after_c.critic, before.critic)
    # The output bias cancels in mean C(real) - mean C(fake) and leaves the input gradient
    # alone: it has no gradient, and stays put. Everything else moves.
    assert not moved.params["Dense_0"].pop("bias")
    assert all(jax.tree.leaves((moved.params, moved.batch_stats))), moved

    z = jax.random.normal(jax.random.key(2), (B, 100))
    after_g, g_metrics = generator_phase(before, z, jax.random.key(3))
    for part in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_equal(getattr(after_g.critic, part), getattr(before.critic, part))
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), after_g.generator, before.generator)
    assert all(jax.tree.leaves((moved.params, moved.batch_stats))), moved
    chex.assert_tree_all_finite((c_metrics, g_metrics))
    assert set(c_metrics) == {"critic_loss", "wasserstein", "gradient_penalty"}
    np.testing.assert_allclose(
        c_metrics["critic_loss"],
        -c_metrics["wasserstein"] + 10.0 * c_metrics["gradient_penalty"],
        rtol=1e-5,
    )


def test_an_iteration_is_n_critic_updates_each_on_its_own_real_batch(images):
    assert WGANGPConfig(batch_size=32, n_critic=5).draw_size() == 160  # What the loop draws.
    key = jax.random.key(1)
    phased, metrics = critic_phase(_state(), images, key)
    # By hand: update i on examples i, i + n_critic, ... (each device keeps its slice).
    state = _state()
    for i in range(N_CRITIC):
        state, by_hand = critic_update(state, images[i::N_CRITIC], jax.random.fold_in(key, i))
    assert int(phased.critic.step) == N_CRITIC
    for k in metrics:
        np.testing.assert_allclose(metrics[k], by_hand[k], rtol=1e-4, atol=1e-6)
    # The whole draw is used: the same updates on one batch repeated would not agree.
    _, repeated = critic_phase(_state(), jnp.repeat(images[:B], N_CRITIC, axis=0), key)
    assert not np.allclose(repeated["wasserstein"], by_hand["wasserstein"], rtol=1e-3)


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    workdir = tmp_path / "wgan_gp"
    argv = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--iterations=4",
        "--gen_interval=2",
        "--eval_interval=4",
        "--eval_samples=20",
        "--val_examples=8",
        "--eval_batch_size=8",
        f"--n_critic={N_CRITIC}",
        f"--batch_size={B}",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert wgan_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    history = wandb_logging.read_run(summary["wandb_run"]["dir"])["history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    for h in history:
        for key in ("critic_loss", "generator_loss", "wasserstein", "gradient_penalty"):
            assert math.isfinite(h[f"train/{key}"]), key
        assert h["train/gradient_penalty"] >= 0
    assert [h["_step"] for h in history if "generated_images._type" in h] == [2, 4]
    last = history[-1]
    assert last["val/wasserstein"] == pytest.approx(
        last["val/critic_real"] - last["val/critic_fake"]
    )
    assert 0 < last["eval/fid"] and 0 <= last["eval/precision"] <= 1 and last["eval/samples"] == 20
    assert summary["train/wasserstein"] == last["train/wasserstein"]
    err = capsys.readouterr().err
    assert "2 [D loss: " in err and ", GP: " in err and "4 [D loss: " in err
