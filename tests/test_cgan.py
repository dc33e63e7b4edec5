"""The conditional GAN: Keras-GAN's cgan.py layers and parameter counts, its iteration (each
phase moves only its network, half a batch of real images drawn), the labels really
conditioning both networks, and an end-to-end run read back from W&B."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cgan as cgan_experiment
from genjax import data, wandb_logging
from genjax.config import CGANConfig
from genjax.models.cgan import Discriminator, Generator
from genjax.steps import cgan as steps
from genjax.steps import dcgan as dcgan_steps
from tests.conftest import write_idx_dataset

HALF = 4  # Real images per iteration (a batch of 8).


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _state(seed=0):
    return steps.create_state(
        Generator(), Discriminator(), 2e-4, 0.5, 2 * HALF, jax.random.key(seed)
    )


def _all_moved(after, before):
    """Every parameter array changed (an unused label embedding would not)."""
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), after, before)
    assert all(jax.tree.leaves(moved)), moved


@pytest.fixture(scope="module")
def batch(real_fashion_mnist):
    images = jnp.asarray(real_fashion_mnist.train.images[:HALF])
    labels = jnp.asarray(real_fashion_mnist.train.labels[:HALF], jnp.int32)
    return {"image": data.scale(images, steps.PIXEL_RANGE), "label": labels}


def test_parameter_counts_match_keras_gan():
    """Keras 3's count_params() of Keras-GAN's cgan.py models, computed once with Keras:
    generator 1,494,520 of which 1,490,936 trainable (BN moving statistics are not);
    discriminator 935,585, all trainable."""
    state = _state()
    g, d = state.generator, state.discriminator
    assert _count(g.params) == 1_490_936
    assert _count(g.params) + _count(g.batch_stats) == 1_494_520
    assert _count(d.params) == 935_585 and _count(d.batch_stats) == 0


def test_each_phase_moves_only_its_network(batch):
    state = _state()
    before = jax.tree.map(jnp.copy, state)
    real, fake_inputs, g_inputs, (real_key, fake_key, g_key) = steps.draws(
        state, batch, jax.random.key(1)
    )
    after_d, d_metrics = jax.jit(dcgan_steps.discriminator_phase)(
        state, real, fake_inputs, real_key, fake_key
    )
    for part in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_equal(
            getattr(after_d.generator, part), getattr(before.generator, part)
        )
    _all_moved(after_d.discriminator.params, before.discriminator.params)

    after_g, g_metrics = jax.jit(dcgan_steps.generator_phase)(before, g_inputs, g_key)
    for part in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_equal(
            getattr(after_g.discriminator, part), getattr(before.discriminator, part)
        )
    _all_moved(after_g.generator.params, before.generator.params)  # Embedding included.
    assert not np.array_equal(
        after_g.generator.batch_stats["BatchNorm_0"]["mean"],
        before.generator.batch_stats["BatchNorm_0"]["mean"],
    )
    chex.assert_tree_all_finite((d_metrics, g_metrics))


def test_an_iteration_takes_half_a_batch_of_real_images_and_a_full_generator_batch(batch):
    assert CGANConfig(batch_size=32).draw_size() == 16  # What the loop draws.
    state = _state()
    real, (z, fake_labels), (g_z, g_labels), _ = steps.draws(state, batch, jax.random.key(1))
    chex.assert_trees_all_equal(real, (batch["image"], batch["label"]))
    # The fakes of the discriminator's update carry the real images' labels.
    assert z.shape == (HALF, 100)
    np.testing.assert_array_equal(fake_labels, batch["label"])
    assert g_z.shape == (2 * HALF, 100) and g_labels.shape == (2 * HALF,)
    assert 0 <= int(g_labels.min()) and int(g_labels.max()) < 10
    new, metrics = steps.train_step(state, batch, jax.random.key(1))
    assert int(new.step) == 1 and set(metrics) == {
        "discriminator_loss",
        "discriminator_accuracy",
        "d_real",
        "d_fake",
        "generator_loss",
    }


def test_the_label_conditions_both_networks(batch):
    state = _state()
    z = jax.random.normal(jax.random.key(2), (HALF, 100))
    a = steps.generate(state, z, jnp.zeros(HALF, jnp.int32))
    b = steps.generate(state, z, jnp.full(HALF, 3, jnp.int32))
    assert float(jnp.abs(a - b).max()) > 1e-4
    d = state.discriminator
    variables = {"params": d.params, "batch_stats": d.batch_stats}
    score = jax.jit(lambda labels: d.apply_fn(variables, (batch["image"], labels), train=False))
    assert float(jnp.abs(score(jnp.zeros(HALF, jnp.int32)) - score(jnp.full(HALF, 3))).min()) > 0


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    workdir = tmp_path / "cgan"
    argv = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--iterations=4",
        "--gen_interval=2",
        "--eval_interval=4",
        "--eval_samples=20",
        "--val_examples=16",
        "--eval_batch_size=8",
        "--class_columns=3",
        f"--feature_net={feature_net}",
        "--batch_size=8",
        "--progress=false",
    ]
    assert cgan_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    history = wandb_logging.read_run(summary["wandb_run"]["dir"])["history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    for h in history:
        for key in ("discriminator_loss", "generator_loss", "discriminator_accuracy"):
            assert math.isfinite(h[f"train/{key}"]), key
        assert 0 < h["train/d_real"] < 1 and 0 < h["train/d_fake"] < 1
    for key in ("generated_images", "generated_by_class"):
        assert [h["_step"] for h in history if f"{key}._type" in h] == [2, 4], key
    last = history[-1]
    assert 0 < last["val/d_real"] < 1 and 0 <= last["val/discriminator_accuracy"] <= 100
    assert 0 < last["eval/fid"] and last["eval/samples"] == 20
    assert 0 <= last["eval/class_accuracy_worst"] <= last["eval/class_accuracy"] <= 1
    assert summary["eval/class_accuracy"] == last["eval/class_accuracy"]
    assert "4 [D loss: " in capsys.readouterr().err
