"""Diffusion: the U-Net's shapes, the noise schedules against their closed forms, the forward
process against a draw, the step's moving average, the samplers on toy models whose
epsilon is known, and an end-to-end run read back from W&B."""

import json
import math
import re
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import diffusion as diffusion_experiment
from experiments import registry
from genjax import wandb_logging
from genjax.loops import iterations
from genjax.models.unet import UNet, time_embedding
from genjax.steps import diffusion as steps
from genjax.steps import ema, fused
from tests.conftest import write_idx_dataset

B, WIDTH = 4, 8  # Tiny: every program here compiles in seconds on CPU.


def _state(decay=0.9, schedule="linear", timesteps=1000):
    model = UNet(WIDTH, attention=True)
    return steps.create_state(model, 1e-3, decay, schedule, timesteps, jax.random.key(0))


def test_unet_maps_images_and_times_to_images_and_starts_at_zero():
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    t = jnp.array([0.0, 0.5, 1.0])
    model = UNet(WIDTH, attention=True)
    params = jax.jit(model.init)(jax.random.key(0), x, t)["params"]
    out = jax.jit(model.apply)({"params": params}, x, t)
    # The last convolution starts at zero: the first prediction is the targets' mean.
    chex.assert_trees_all_equal(out, jnp.zeros_like(x))
    plain = jax.eval_shape(UNet(WIDTH, attention=False).init, jax.random.key(0), x, t)
    assert "SelfAttention_0" in params and "SelfAttention_0" not in plain["params"]
    emb = time_embedding(t, 9)
    assert emb.shape == (3, 9) and not np.allclose(emb[0], emb[1])


def test_linear_schedule_endpoints():
    """Ho et al.: beta from 1e-4 to 0.02 over T = 1000; log alpha_bar_T = sum log(1 - beta)
    = -(sum beta + sum beta^2 / 2 + sum beta^3 / 3 + ...), each sum of the linear betas in
    closed form (the series' rest is below 1e-5)."""
    abar = steps.alpha_bars("linear", 1000)
    assert abar[0] == pytest.approx(1 - 1e-4, rel=1e-12)
    b = np.linspace(1e-4, 0.02, 1000)
    first = 1000 * (1e-4 + 0.02) / 2
    second = np.sum(b**2) / 2
    third = np.sum(b**3) / 3
    assert abar[-1] == pytest.approx(math.exp(-(first + second + third)), rel=1e-5)
    assert np.all(np.diff(abar) < 0)
    # Other T: scaled by 1000 / T, the same sum of betas.
    assert np.sum(steps.betas("linear", 100)) == pytest.approx(first, rel=1e-12)


def test_cosine_schedule_is_its_closed_form():
    """Nichol & Dhariwal: alpha_bar[t] = f(t + 1) / f(0), f(s) = cos^2(pi/2 (s/T + 0.008) /
    1.008), but for the last step, whose beta is clipped to 0.999."""
    T = 1000
    abar = steps.alpha_bars("cosine", T)

    def f(s):
        return math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 1, T // 2, T - 2):
        assert abar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9), t
    assert abar[0] > 0.9999 and abar[T // 2 - 1] == pytest.approx(0.5, abs=0.02)
    assert abar[-1] == pytest.approx(abar[-2] * 0.001, rel=1e-9)
    assert np.all(steps.betas("cosine", T) <= 0.999)


def test_forward_process_mean_and_variance_match_a_draw():
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: mean sqrt(abar) x0, variance 1 - abar."""
    n, abar_t = 20000, 0.3
    x0 = jnp.broadcast_to(jnp.array([-0.8, 0.2, 0.9])[None, :, None, None], (n, 3, 1, 1))
    eps = jax.random.normal(jax.random.key(0), x0.shape)
    x_t = np.asarray(steps.q_sample(jnp.full((n,), abar_t), x0, eps))
    # Standard errors: 0.0059 for the mean, 0.0059 for the variance.
    np.testing.assert_allclose(x_t.mean(0).ravel(), math.sqrt(abar_t) * x0[0].ravel(), atol=0.03)
    np.testing.assert_allclose(x_t.var(0).ravel(), 1 - abar_t, atol=0.03)


def test_loss_at_initialisation_is_the_noise_energy(real_fashion_mnist):
    """The U-Net starts at zero, so its first loss is mean(eps^2) of the very noise drawn."""
    state = _state()
    x0 = jnp.asarray(real_fashion_mnist.train.images[:B], jnp.float32) / 127.5 - 1
    key = jax.random.key(3)
    loss = jax.jit(steps.per_example_loss)(state, state.params, x0, key)
    eps = jax.random.normal(jax.random.split(key)[1], x0.shape)
    chex.assert_trees_all_close(loss, jnp.mean(eps**2, axis=(1, 2, 3)), rtol=1e-5)


def assert_moving_average(new_ema, ema, params, d) -> None:
    """new_ema = d * ema + (1 - d) * params to float32's rounding of the two terms (XLA may
    fuse them into one multiply-add, so the last bit can differ from NumPy's)."""

    def check(new, e, p):
        e, p = np.asarray(e, np.float64), np.asarray(p, np.float64)
        d64 = np.float64(d)
        terms = np.abs(d64 * e) + np.abs((1 - d64) * p)
        error = np.abs(np.asarray(new, np.float64) - (d64 * e + (1 - d64) * p))
        assert np.all(error <= 2 * np.finfo(np.float32).eps * terms), error.max()

    jax.tree.map(check, new_ema, ema, params)


def test_train_steps_move_the_parameters_and_average_them_exactly(real_fashion_mnist):
    """ema' = d * ema + (1 - d) * params' to float32's rounding, d = min(decay, (1 + n) / (10 + n))
    after n steps; three steps move every parameter (zero-initialised layers open one
    after another: the output layer, then the blocks' last convolutions, then the rest)."""
    state = _state(decay=0.9)
    first = jax.tree.map(np.asarray, state.params)
    batch = {
        "image": jnp.asarray(real_fashion_mnist.train.images[:B], jnp.float32) / 127.5 - 1,
        "label": jnp.zeros((B,), jnp.int32),
    }
    key = jax.random.key(1)
    for n in (1, 2, 3):
        ema_before = jax.tree.map(np.asarray, state.ema_params)
        state, metrics = steps.train_step(state, batch, key)
        assert int(state.step) == n and np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
        d = np.minimum(np.float32(0.9), np.float32(1 + n) / np.float32(10 + n))
        assert_moving_average(state.ema_params, ema_before, state.params, d)
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), first, state.params)
    assert all(jax.tree.leaves(moved)), moved
    # Past the warm-up the decay is the configured one.
    assert float(ema.effective_decay(0.9, jnp.int32(1000))) == pytest.approx(0.9)


def _point_mass_eps(abar, c):
    """The exact epsilon of data that are all c: (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""

    def eps_fn(x, t):
        a = abar[t][:, None, None, None]
        return (x - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)

    return eps_fn


def _gaussian_eps(abar, mu, s):
    """The exact epsilon of data ~ N(mu, s^2) per pixel: E[eps | x_t] =
    sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)."""

    def eps_fn(x, t):
        a = abar[t][:, None, None, None]
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * s**2 + 1 - a)

    return eps_fn


def test_ddim_on_a_point_mass_follows_its_path_and_lands_on_it():
    """All data c: the x0 estimate is c at every step, so DDIM (eta 0) keeps x_t on
    sqrt(abar_t) c + sqrt(1 - abar_t) eps_T and ends exactly at c, with any step count."""
    T = 1000
    abar = jnp.asarray(steps.alpha_bars("linear", T), jnp.float32)
    c = 0.5
    x_T = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    eps_fn = _point_mass_eps(abar, c)
    for n in (T, 7):
        x0, (xs, finals) = steps.sample(
            eps_fn, abar, x_T, jax.random.key(1), num_steps=n, sampler="ddim", clip=False
        )
        np.testing.assert_allclose(x0, c, atol=2e-4)
        np.testing.assert_allclose(finals, c, atol=2e-4)
        ts = steps.sampling_steps(T, n)
        a = np.asarray(abar, np.float64)[ts][:, None, None, None]
        eps_T = (np.asarray(x_T[0]) - np.sqrt(a[0]) * c) / np.sqrt(1 - a[0])
        np.testing.assert_allclose(xs[:-1], np.sqrt(a) * c + np.sqrt(1 - a) * eps_T, atol=2e-4)


def test_ddim_on_gaussian_data_is_its_closed_form_and_the_ode_limit():
    """Data ~ N(mu, s^2): with z = (x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a), a DDIM step
    (eta 0) from a to a' multiplies z by r = (sqrt(a a') s^2 + sqrt((1 - a)(1 - a'))) /
    sqrt(v v') <= 1 (v = a s^2 + 1 - a); the probability-flow ODE keeps z. So DDIM ends at
    mu + s z_T prod r, and with all T steps at the ODE's map mu + s z_T (prod r -> 1)."""
    T, mu, s = 1000, 0.3, 0.5
    abar64 = steps.alpha_bars("cosine", T)
    abar = jnp.asarray(abar64, jnp.float32)
    x_T = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    z_T = (np.asarray(x_T) - np.sqrt(abar64[-1]) * mu) / np.sqrt(abar64[-1] * s**2 + 1 - abar64[-1])
    eps_fn = _gaussian_eps(abar, mu, s)
    for n in (10, T):
        x0, _ = steps.sample(
            eps_fn, abar, x_T, jax.random.key(1), num_steps=n, sampler="ddim", clip=False
        )
        a = np.append(abar64[steps.sampling_steps(T, n)], 1.0)
        v = a * s**2 + 1 - a
        r = (np.sqrt(a[:-1] * a[1:]) * s**2 + np.sqrt((1 - a[:-1]) * (1 - a[1:]))) / np.sqrt(
            v[:-1] * v[1:]
        )
        np.testing.assert_allclose(x0, mu + s * z_T * np.prod(r), rtol=1e-3, atol=1e-4)
    assert np.prod(r) > 0.998  # All T steps: the deterministic limit, to 0.2%.
    np.testing.assert_allclose(x0, mu + s * z_T, atol=5e-3)


def test_ancestral_is_ddim_with_eta_one_and_lands_on_a_point_mass():
    """The DDPM posterior q(x_prev | x_t, x0) is DDIM's eta = 1 (Song et al.), drawn with the
    same noise; on a point mass both end exactly at it (the last step adds no noise)."""
    T, n = 100, 20
    abar = jnp.asarray(steps.alpha_bars("linear", T), jnp.float32)
    x_T = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    key = jax.random.key(5)

    def run(eps_fn, sampler, eta=0.0):
        out, _ = steps.sample(
            eps_fn, abar, x_T, key, num_steps=n, sampler=sampler, eta=eta, clip=False
        )
        return np.asarray(out)

    gaussian, point = _gaussian_eps(abar, 0.3, 0.5), _point_mass_eps(abar, -0.4)
    for eps_fn in (gaussian, point):
        np.testing.assert_allclose(
            run(eps_fn, "ancestral"), run(eps_fn, "ddim", 1.0), rtol=1e-4, atol=1e-4
        )
    np.testing.assert_allclose(run(point, "ancestral"), -0.4, atol=2e-4)
    # On Gaussian data the noise added on the way shows: eta 0 ends elsewhere.
    assert not np.allclose(run(gaussian, "ancestral"), run(gaussian, "ddim"), atol=1e-2)


def test_sampling_steps_run_from_the_last_step_to_the_first():
    np.testing.assert_array_equal(steps.sampling_steps(10, 10), np.arange(9, -1, -1))
    visited = steps.sampling_steps(1000, 50)
    assert visited[0] == 999 and visited[-1] == 0 and np.all(np.diff(visited) < 0)
    with pytest.raises(ValueError):
        steps.sampling_steps(10, 11)


def test_bad_sampler_settings_are_refused(capsys):
    assert diffusion_experiment.main(["--sample_steps=2000"]) == 2
    assert "more than the 1000 diffusion steps" in capsys.readouterr().err
    assert diffusion_experiment.main(["--final_sample_steps=10,x"]) == 2
    assert "--final_sample_steps=10,x" in capsys.readouterr().err
    assert diffusion_experiment.main(["--final_samplers=ddim,euler"]) == 2
    assert "euler unknown" in capsys.readouterr().err
    assert diffusion_experiment.main(["--ema_decay=1"]) == 2


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    workdir = tmp_path / "diffusion"
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
        "--timesteps=20",
        "--sample_steps=3",
        "--final_sample_steps=2,3",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert diffusion_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    history = wandb_logging.read_run(summary["wandb_run"]["dir"])["history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    assert all(math.isfinite(h["train/loss"]) for h in history)
    for key in ("generated_images", "trajectory"):
        assert [h["_step"] for h in history if f"{key}._type" in h] == [2, 4], key
    last = history[-1]
    assert last["generated_images.width"] == 5 * 30 + 2  # A 5x5 grid.
    assert last["trajectory.width"] == 4 * 30 + 2  # 3 steps: x_T, two between, x_0.
    assert last["val/loss"] > 0 and 0 < last["eval/fid"]
    # The table at the end: 3 steps is eval/fid's own sampler, copied; 2 steps its own.
    assert last["eval/fid_ddim_3"] == last["eval/fid"]
    assert last["eval/fid_ddim_2"] != last["eval/fid"]
    assert 0 <= last["eval/precision_ddim_2"] <= 1 and 0 <= last["eval/recall_ddim_2"] <= 1
    assert summary["eval/fid_ddim_2"] == last["eval/fid_ddim_2"]
    assert "4 [loss: " in capsys.readouterr().err
    # The checkpoint holds the moving average beside the parameters.
    _, _, state = registry.restore(workdir)
    assert int(state.step) == 4
    assert not np.array_equal(
        state.ema_params["Conv_0"]["kernel"], state.params["Conv_0"]["kernel"]
    )


def _ynn_fusion_bodies(hlo: str) -> list[str]:
    """The bodies of the computations that the YNNPACK fusions of compiled HLO text call."""
    bodies = {}
    for block in hlo.split("\n\n"):
        head = block.strip().split(" ", 1)[0]
        if head.startswith("%"):
            bodies[head] = block
    called = re.findall(r"%ynn_fusion[.\d]* = .*?calls=(%[\w.\-]+)", hlo)
    return [bodies[name] for name in called]


def test_the_loop_compiles_the_unet_convolutions_without_ynnpack_on_cpu(monkeypatch):
    """The steps module's CPU_COMPILER_OPTIONS reach the program the iteration loop runs:
    XLA's YNNPACK library fusions (slower for this step's convolutions here) are left for
    reductions only, and no convolution is in one."""
    state, key = _state(), jax.random.key(1)
    images, labels = jnp.zeros((8, 28, 28, 1), jnp.uint8), jnp.zeros((8,), jnp.int32)
    static = dict(train_step=steps.train_step, batch_size=B, pixel_range=steps.PIXEL_RANGE)
    static["sampling"] = "random"

    def compiled_text(options):
        step = fused._jitted(fused._sampled_step, fused._SAMPLED, options)
        return step.lower(state, images, labels, key, key, **static).compile().as_text()

    options = tuple(steps.CPU_COMPILER_OPTIONS.items())
    assert options == (("xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_REDUCE"),)
    # XLA:CPU's default puts convolutions in them here (whether it does depends on the CPU
    # and jaxlib); with the options none is.
    text = compiled_text(options)
    assert "convolution(" in text
    assert not any("convolution(" in body for body in _ynn_fusion_bodies(text))

    # The iteration loop's segment asks for the step compiled with them.
    asked = []
    jitted = fused._jitted

    def recording(fn, static_names, compiler_options):
        asked.append(compiler_options)
        return jitted(fn, static_names, compiler_options)

    monkeypatch.setattr(fused, "_jitted", recording)
    config = diffusion_experiment.Config(batch_size=B, iterations=1, fuse="loop")
    split = types.SimpleNamespace(images=images, labels=labels)
    keys = types.SimpleNamespace(step=key, data=key)
    runner = iterations.segment_runner(
        config, steps, split, keys, types.SimpleNamespace(signum=None)
    )
    state, _ = runner(state, 1)
    assert asked == [options]
    # The benchmark's --compare=xla_defaults: the same loop with XLA's default options.
    runner = iterations.segment_runner(
        config, steps, split, keys, types.SimpleNamespace(signum=None), options={}
    )
    runner(state, 1)
    assert asked == [options, ()]
