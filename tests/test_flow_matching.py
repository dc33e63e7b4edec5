"""Flow matching: the interpolant and its target velocity, the loss at initialisation, the
step's moving average, the Euler and Heun samplers on fields whose flow is known, and an
end-to-end run read back from W&B."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import flow_matching as flow_experiment
from genjax import wandb_logging
from genjax.models.unet import UNet
from genjax.steps import flow_matching as steps
from tests.conftest import write_idx_dataset
from tests.test_diffusion import assert_moving_average

B, WIDTH = 4, 8  # Tiny: every program here compiles in seconds on CPU.


def _state(decay=0.9):
    return steps.create_state(UNet(WIDTH, attention=False), 1e-3, decay, jax.random.key(0))


@pytest.fixture(scope="module")
def images(real_fashion_mnist):
    return jnp.asarray(real_fashion_mnist.train.images[:B], jnp.float32) / 127.5 - 1


def test_interpolant_runs_from_noise_to_data_at_the_target_velocity():
    x0 = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
    x1 = jax.random.uniform(jax.random.key(1), (3, 4, 4, 1), minval=-1, maxval=1)
    ones = jnp.ones((3,))
    chex.assert_trees_all_close(steps.interpolate(0 * ones, x0, x1), x0)
    chex.assert_trees_all_close(steps.interpolate(ones, x0, x1), x1)
    chex.assert_trees_all_close(steps.interpolate(0.5 * ones, x0, x1), (x0 + x1) / 2, atol=1e-6)
    # The target is the path's derivative, the same at every time.
    t, h = jnp.array([0.1, 0.5, 0.8]), 1e-2
    slope = (steps.interpolate(t + h, x0, x1) - steps.interpolate(t - h, x0, x1)) / (2 * h)
    chex.assert_trees_all_close(slope, steps.target_velocity(x0, x1), atol=1e-4)


def test_loss_at_initialisation_is_the_target_energy(images):
    """The U-Net starts at zero, so its first loss is mean((x1 - x0)^2) of the noise drawn."""
    state = _state()
    key = jax.random.key(3)
    loss = jax.jit(steps.per_example_loss)(state, state.params, images, key)
    x0 = jax.random.normal(jax.random.split(key)[1], images.shape)
    chex.assert_trees_all_close(loss, jnp.mean((images - x0) ** 2, axis=(1, 2, 3)), rtol=1e-5)


def test_a_train_step_moves_the_parameters_and_their_average(images):
    """One step: ema' = d * ema + (1 - d) * params', d = min(0.9, 2 / 11)."""
    state = _state(decay=0.9)
    before = jax.tree.map(np.asarray, state.params)
    batch = {"image": images, "label": jnp.zeros((B,), jnp.int32)}
    state, metrics = steps.train_step(state, batch, jax.random.key(1))
    assert int(state.step) == 1 and np.isfinite(metrics["loss"])
    assert_moving_average(state.ema_params, before, state.params, np.float32(2) / np.float32(11))
    # The zero-initialised output layer has a gradient at once (its input is not zero).
    out = state.params["Conv_3"]["kernel"]  # [3, 3, WIDTH, 1]
    assert out.shape[-1] == 1 and np.all(np.asarray(out) != before["Conv_3"]["kernel"])
    (val,) = steps.eval_step(state, batch, jax.random.key(2)).values()
    assert val.shape == (B,) and np.all(np.isfinite(val))


def test_one_euler_step_on_a_constant_field_is_exact():
    x0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    c = jnp.linspace(-1, 1, 16).reshape(1, 4, 4, 1)
    x1, (xs, finals) = steps.sample(
        lambda x, t: jnp.broadcast_to(c, x.shape), x0, num_steps=1, sampler="euler"
    )
    chex.assert_trees_all_close(x1, x0 + c, atol=1e-6)
    chex.assert_trees_all_close(xs, jnp.stack([x0[0], x1[0]]))
    chex.assert_trees_all_close(finals[0], x1[0], atol=1e-6)  # One step: its estimate is it.


def test_heun_integrates_a_field_linear_in_time_exactly_and_euler_does_not():
    """v = a + b t: x(1) = x(0) + a + b / 2. Heun is the trapezoidal rule: exact in one step;
    Euler's one step reads v at t = 0 only."""
    x0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    a, b = 0.7, -1.3

    def v_fn(x, t):
        return jnp.broadcast_to(a + b * t[:, None, None, None], x.shape)

    heun, _ = steps.sample(v_fn, x0, num_steps=1, sampler="heun")
    euler, _ = steps.sample(v_fn, x0, num_steps=1, sampler="euler")
    chex.assert_trees_all_close(heun, x0 + a + b / 2, atol=1e-6)
    chex.assert_trees_all_close(euler, x0 + a, atol=1e-6)


def test_euler_on_a_point_mass_field_follows_the_straight_path():
    """All data c: the exact velocity (c - x_t) / (1 - t) points along a straight path, which
    Euler follows exactly with any number of steps."""
    c = 0.25
    x0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    for n in (1, 3, 10):
        x1, (xs, finals) = steps.sample(
            lambda x, t: (c - x) / (1 - t[:, None, None, None]), x0, num_steps=n, sampler="euler"
        )
        np.testing.assert_allclose(x1, c, atol=1e-5)
        t = np.arange(n + 1)[:, None, None, None] / n
        np.testing.assert_allclose(xs, (1 - t) * np.asarray(x0[0]) + t * c, atol=1e-5)
        np.testing.assert_allclose(finals, c, atol=1e-5)


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    workdir = tmp_path / "flow_matching"
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
        f"--batch_size={B}",
        f"--width={WIDTH}",
        "--attention=false",
        "--sampler=heun",
        "--sample_steps=2",
        "--final_samplers=euler,heun",
        "--final_sample_steps=2",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert flow_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    history = wandb_logging.read_run(summary["wandb_run"]["dir"])["history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    assert all(math.isfinite(h["train/loss"]) for h in history)
    for key in ("generated_images", "trajectory"):
        assert [h["_step"] for h in history if f"{key}._type" in h] == [2, 4], key
    last = history[-1]
    assert last["generated_images.width"] == 5 * 30 + 2  # A 5x5 grid.
    assert last["val/loss"] > 0 and 0 < last["eval/fid"]
    assert last["eval/fid_heun_2"] == last["eval/fid"]  # eval/fid's own sampler, copied.
    assert last["eval/fid_euler_2"] != last["eval/fid"]
    assert summary["eval/recall_euler_2"] == last["eval/recall_euler_2"]
    assert "4 [loss: " in capsys.readouterr().err
