"""The DCGAN's steps: Keras-GAN's iteration (each phase moves only its network), explicit
keys, the discriminator's evaluation, and the iteration loop's segments."""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import data, run
from genjax.config import DCGANConfig
from genjax.loops import iterations
from genjax.models.dcgan import Discriminator, Generator
from genjax.steps import dcgan as steps
from genjax.steps import fused


@pytest.fixture(scope="module")
def small_images(real_fashion_mnist):
    return jax.device_put(real_fashion_mnist.train.images[:256])


def _state(seed=0):
    return steps.create_state(Generator(), Discriminator(), 2e-4, 0.5, jax.random.key(seed))


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _batch(images, n=16):
    return {"image": data.scale(images[:n], steps.PIXEL_RANGE), "label": jnp.zeros(n, jnp.int32)}


def test_generator_update_leaves_the_discriminator_untouched(small_images):
    state = _state()
    before = _copy(state)
    _, z, (_, _, dropout_key) = steps.draws(state, _batch(small_images), jax.random.key(1))
    after, metrics = jax.jit(steps.generator_phase)(state, z, dropout_key)
    chex.assert_trees_all_equal(after.discriminator.params, before.discriminator.params)
    chex.assert_trees_all_equal(after.discriminator.batch_stats, before.discriminator.batch_stats)
    chex.assert_trees_all_equal(after.discriminator.opt_state, before.discriminator.opt_state)
    # The generator did learn, and its own batch statistics moved.
    assert not np.array_equal(
        after.generator.params["Dense_0"]["kernel"], before.generator.params["Dense_0"]["kernel"]
    )
    assert not np.array_equal(
        after.generator.batch_stats["BatchNorm_0"]["mean"],
        before.generator.batch_stats["BatchNorm_0"]["mean"],
    )
    chex.assert_tree_all_finite(metrics)


def test_discriminator_update_leaves_the_generator_untouched(small_images):
    state = _state()
    before = _copy(state)
    real, z, (real_key, fake_key, _) = steps.draws(state, _batch(small_images), jax.random.key(1))
    after, metrics = jax.jit(steps.discriminator_phase)(state, real, z, real_key, fake_key)
    chex.assert_trees_all_equal(after.generator.params, before.generator.params)
    chex.assert_trees_all_equal(after.generator.batch_stats, before.generator.batch_stats)
    chex.assert_trees_all_equal(after.generator.opt_state, before.generator.opt_state)
    assert not np.array_equal(
        after.discriminator.params["Conv_0"]["kernel"],
        before.discriminator.params["Conv_0"]["kernel"],
    )
    assert not np.array_equal(
        after.discriminator.batch_stats["BatchNorm_0"]["mean"],
        before.discriminator.batch_stats["BatchNorm_0"]["mean"],
    )
    chex.assert_tree_all_finite(metrics)


def test_same_key_same_samples_and_finite_metrics(small_images):
    batch = _batch(small_images)
    a = steps.train_step(_state(), batch, jax.random.key(1))
    b = steps.train_step(_state(), batch, jax.random.key(1))
    c = steps.train_step(_state(), batch, jax.random.key(3))
    chex.assert_trees_all_equal(a[1], b[1])
    assert not np.allclose(a[1]["generator_loss"], c[1]["generator_loss"])
    for k in ("discriminator_loss", "generator_loss", "d_real", "d_fake"):
        assert np.isfinite(a[1][k])
    assert 0 <= a[1]["discriminator_accuracy"] <= 100 and int(a[0].step) == 1
    z = jax.random.normal(jax.random.key(4), (4, 100))
    chex.assert_trees_all_equal(steps.generate(a[0], z), steps.generate(b[0], z))
    assert float(jnp.abs(steps.generate(a[0], z)).max()) <= 1.0


def test_the_eval_step_scores_the_discriminator_per_example(small_images):
    batch = _batch(small_images, 8)
    out = steps.eval_step(_state(), batch, jax.random.key(5))
    assert {k: v.shape for k, v in out.items()} == {
        "d_real": (8,),
        "d_fake": (8,),
        "discriminator_accuracy": (8,),
    }
    assert set(np.unique(np.asarray(out["discriminator_accuracy"]))) <= {0.0, 50.0, 100.0}
    expected = 50.0 * ((out["d_real"] > 0.5) + (out["d_fake"] <= 0.5))
    np.testing.assert_array_equal(out["discriminator_accuracy"], expected)


def test_fused_scan_equals_one_call_per_iteration(small_images):
    labels = jnp.zeros(len(small_images), jnp.int32)
    keys = jax.random.key(1), jax.random.key(2)
    # The loop's own settings (batch 16, random draws): the signal test below compiles the
    # same one-iteration program.
    static = dict(
        train_step=steps.train_step, batch_size=16, pixel_range=steps.PIXEL_RANGE, sampling="random"
    )
    looped, rows = _state(), []
    for _ in range(3):
        looped, m = fused.sampled_step(looped, small_images, labels, *keys, **static)
        rows.append(m)
    scanned, stacked = fused.sampled_steps(
        _state(), small_images, labels, *keys, num_steps=3, **static
    )
    # Adam normalises each update, so rounding differences between the two compiled programs
    # show up at the scale of the learning rate (2e-4) in near-zero gradients: compare the
    # parameters at a few learning-rate steps, and the losses closely.
    chex.assert_trees_all_close(
        scanned.generator.params, looped.generator.params, rtol=1e-3, atol=1e-3
    )
    for key in ("generator_loss", "discriminator_loss", "d_real", "d_fake"):
        np.testing.assert_allclose(stacked[key], [float(r[key]) for r in rows], rtol=1e-3)
    assert int(scanned.step) == 3


def test_batches_are_drawn_per_step_from_the_data_key():
    key = jax.random.key(7)
    a = fused.draw_indices(key, jnp.int32(3), n=100, batch_size=10, sampling="random")
    b = fused.draw_indices(key, jnp.int32(3), n=100, batch_size=10, sampling="random")
    c = fused.draw_indices(key, jnp.int32(4), n=100, batch_size=10, sampling="random")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and int(a.max()) < 100
    # "epochs": an epoch's ten steps cover every example once, in its shuffled order.
    epoch = [fused.draw_indices(key, jnp.int32(s), n=100, batch_size=10, sampling="epochs")
             for s in range(10)]  # fmt: skip
    order = np.concatenate(epoch)
    np.testing.assert_array_equal(order, data.epoch_permutation(key, 0, 100))


class _Flag:
    signum = None


def test_a_signal_ends_a_segment_within_about_one_iteration(real_fashion_mnist):
    """Iterations dispatched one by one are queued faster than they run; the stop flag must
    be read as they finish, or a SIGTERM would wait for the whole segment."""
    train = data.to_device(
        data.Split(real_fashion_mnist.train.images[:256], real_fashion_mnist.train.labels[:256])
    )
    config = DCGANConfig(batch_size=16, eval_samples=0, fuse="loop")
    flag = _Flag()
    segment = iterations.segment_runner(config, steps, train, run.keys(0), flag)
    state, _ = segment(_state(), 1)  # Compiled.
    start = time.perf_counter()
    state, m = segment(state, 3)
    jax.block_until_ready((state, m))
    per_iteration = (time.perf_counter() - start) / 3

    class _SignalLater:
        """A signal that arrives four iterations' time after the segment starts."""

        def __init__(self):
            self.at = time.perf_counter() + 4 * per_iteration

        @property
        def signum(self):
            return 15 if time.perf_counter() >= self.at else None

    later = _SignalLater()
    segment = iterations.segment_runner(config, steps, train, run.keys(0), later)
    state, m = segment(state, 50)
    jax.block_until_ready((state, m))
    late = time.perf_counter() - later.at
    # Queued ahead, all 50 would run: the stop is read within a few iterations instead
    # (a loaded 2-core machine stretches some iterations).
    assert 2 <= len(m["generator_loss"]) < 20, len(m["generator_loss"])
    assert late < 10 * per_iteration, (late, per_iteration)
