import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import data
from genjax.models.autoencoder import Autoencoder
from genjax.steps import autoencoder as steps
from genjax.steps import fused


def _state(seed=0, latent_dim=2, lr=1e-3):
    return steps.create_state(Autoencoder(latent_dim=latent_dim), lr, jax.random.key(seed))


@pytest.fixture(scope="module")
def small(real_fashion_mnist):
    """96 real training images on the device, in [0, 1]."""
    return data.to_device(
        data.Split(real_fashion_mnist.train.images[:96], real_fashion_mnist.train.labels[:96])
    )


def _batch(split, idx):
    return {"image": data.scale(split.images[idx], steps.PIXEL_RANGE), "label": split.labels[idx]}


def _copy(state):
    # train_step donates its state; keep an undonated copy for comparisons.
    return jax.tree.map(jnp.copy, state)


def test_jitted_and_unjitted_steps_agree(small):
    batch = _batch(small, jnp.arange(32))
    key = jax.random.key(0)
    jitted, m_jit = steps.train_step(_copy(_state()), batch, key)
    # The undecorated function, run op by op.
    plain, m_plain = steps.train_step.__wrapped__(_copy(_state()), batch, key)
    # Adam normalises each update, so rounding differences in tiny gradients show up at
    # the scale of the learning rate (1e-3): compare well below it.
    chex.assert_trees_all_close(jitted.params, plain.params, rtol=1e-4, atol=2e-5)
    chex.assert_trees_all_close(m_jit, m_plain, rtol=1e-5)
    chex.assert_tree_all_finite((jitted.params, m_jit))


def test_same_seed_same_result_other_seed_different(small):
    def run(init_seed, data_seed):
        keys = jax.random.key(init_seed), jax.random.key(data_seed)
        state, metrics = fused.train_steps(
            _state(init_seed),
            small.images,
            small.labels,
            keys[0],
            fused.epoch_order(keys[1], 0, n=len(small)),
            0,
            train_step=steps.train_step,
            num_steps=3,
            batch_size=32,
            pixel_range=steps.PIXEL_RANGE,
        )
        return state.params, metrics["loss"]

    a, b = run(0, 0), run(0, 0)
    chex.assert_trees_all_equal(a, b)
    other_init, other_order = run(1, 0), run(0, 1)
    assert not np.allclose(a[1], other_init[1])
    assert not np.allclose(a[1], other_order[1])


def test_train_step_is_traced_once_over_many_calls(small):
    traced = chex.assert_max_traces(steps.train_step.__wrapped__, n=1)
    step = jax.jit(traced, donate_argnames="state")
    state = _state()
    for i in range(5):
        state, _ = step(state, _batch(small, jnp.arange(32) + i), jax.random.key(i))
    assert int(state.step) == 5


def test_loss_falls_on_a_tiny_batch(small):
    batch = _batch(small, jnp.arange(16))
    state = _state(lr=1e-3)
    losses = []
    for i in range(60):
        state, metrics = steps.train_step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_fused_chunks_equal_a_python_loop_of_steps(small):
    """One epoch in two dispatches gives the same parameters as step-by-step training."""
    step_key, data_key = jax.random.key(3), jax.random.key(4)
    state = _state()
    for start, length in fused.chunks(3, 2):
        state, _ = fused.train_steps(
            state,
            small.images,
            small.labels,
            step_key,
            fused.epoch_order(data_key, 1, n=len(small)),
            start,
            train_step=steps.train_step,
            num_steps=length,
            batch_size=32,
            pixel_range=steps.PIXEL_RANGE,
        )
    perm = data.epoch_permutation(data_key, 1, 96)
    reference = _state()
    for i in range(3):
        reference, _ = steps.train_step(
            reference, _batch(small, perm[i * 32 : (i + 1) * 32]), step_key
        )
    chex.assert_trees_all_close(state.params, reference.params, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3


@pytest.mark.parametrize("keep", [0, 5, 40, 90, 500])
def test_evaluate_counts_every_example_once_and_keeps_the_first_outputs(small, keep):
    """Means over every example once; the named per-example outputs (the latent codes the
    pictures plot) come back for the first `keep` examples, whichever batches hold them."""
    state = _state()
    n = 90  # Not a multiple of the eval batch: the last batch is padded and masked.
    images, labels = small.images[:n], small.labels[:n]
    metrics = fused.evaluate(
        state,
        images,
        labels,
        jax.random.key(0),
        eval_step=steps.eval_step,
        batch_size=32,
        pixel_range=steps.PIXEL_RANGE,
        outputs=steps.EVAL_OUTPUTS,
        keep=keep,
    )
    per_example = steps.eval_step(state, _batch(small, jnp.arange(n)), jax.random.key(0))
    np.testing.assert_allclose(metrics["loss"], per_example["loss"].mean(), rtol=1e-5)
    if keep:
        chex.assert_shape(metrics["z"], (min(keep, n), 2))
        np.testing.assert_allclose(metrics["z"], per_example["z"][:keep], rtol=1e-5, atol=1e-6)
    else:
        assert set(metrics) == {"loss"}


def test_evaluate_refuses_an_output_the_eval_step_does_not_return(small):
    with pytest.raises(ValueError, match=r"eval_step returns no \['codes'\]; it returns"):
        fused.evaluate(
            _state(),
            small.images[:40],
            small.labels[:40],
            jax.random.key(0),
            eval_step=steps.eval_step,
            batch_size=32,
            pixel_range=steps.PIXEL_RANGE,
            outputs=("codes",),
            keep=8,
        )


def test_evaluate_refuses_an_unnamed_per_example_output(small):
    with pytest.raises(ValueError, match=r"'z' has shape \(32, 2\).*EVAL_OUTPUTS"):
        fused.evaluate(
            _state(),
            small.images[:40],
            small.labels[:40],
            jax.random.key(0),
            eval_step=steps.eval_step,
            batch_size=32,
            pixel_range=steps.PIXEL_RANGE,
        )


def test_chunks_cover_the_epoch():
    assert fused.chunks(1875, 500) == [(0, 500), (500, 500), (1000, 500), (1500, 375)]
    assert fused.chunks(3, 10) == [(0, 3)]


def test_fused_steps_compile_once_across_chunks_and_epochs(small):
    """The experiment's real path: same-length dispatches of any epoch reuse one program."""
    state = _state()
    before = fused.train_steps._cache_size()
    for epoch in range(2):
        for start in (0, 1):
            state, _ = fused.train_steps(
                state,
                small.images,
                small.labels,
                jax.random.key(0),
                fused.epoch_order(jax.random.key(1), jnp.int32(epoch), n=len(small)),
                jnp.int32(start),
                train_step=steps.train_step,
                num_steps=1,
                batch_size=32,
                pixel_range=steps.PIXEL_RANGE,
            )
    assert fused.train_steps._cache_size() == before + 1


def test_epoch_order_is_the_epochs_permutation_per_trial():
    """One order per epoch (drawn outside the dispatches); vectorized: one per data key."""
    keys = jnp.stack([jax.random.key(4), jax.random.key(5)])
    one = fused.epoch_order(keys[0], jnp.int32(2), n=96)
    both = fused.epoch_order(keys, jnp.int32(2), n=96, vectorized=True)
    np.testing.assert_array_equal(one, data.epoch_permutation(keys[0], 2, 96))
    np.testing.assert_array_equal(both[1], data.epoch_permutation(keys[1], 2, 96))
    assert sorted(np.asarray(one).tolist()) == list(range(96))
    assert not np.array_equal(one, fused.epoch_order(keys[0], jnp.int32(3), n=96))
