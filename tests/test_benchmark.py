"""The benchmark command: its cases run the experiments' code, and its FLOP count."""

from __future__ import annotations

import importlib.util
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark
from genjax import flops
from genjax.models.autoencoder import Autoencoder
from genjax.steps import autoencoder as steps_ae


def test_flop_count_of_dense_and_strided_convolution_training():
    x = jnp.zeros((8, 28, 28, 3))
    conv = nn.Conv(16, (3, 3), strides=(2, 2))
    params = conv.init(jax.random.key(0), x)
    forward = flops.count(conv.apply, params, x)
    assert forward == 2 * 8 * (14 * 14) * 16 * (3 * 3 * 3)
    # The weight and input gradients cost one forward each (the input gradient, a
    # transposed convolution, without its multiplications by inserted zeros).
    both = jax.grad(lambda p, x: conv.apply(p, x).sum(), argnums=(0, 1))
    assert flops.count(both, params, x) == 3 * forward
    dense = nn.Dense(5)
    params = dense.init(jax.random.key(0), jnp.zeros((4, 7)))
    assert flops.count(dense.apply, params, jnp.zeros((4, 7))) == 2 * 4 * 7 * 5


def test_flops_inside_a_scan_count_once_per_iteration():
    def repeated(x):
        return jax.lax.scan(lambda c, _: (c @ c, None), x, None, length=3)[0]

    assert flops.count(repeated, jnp.zeros((4, 4))) == 3 * 2 * 4 * 4 * 4


def test_products_are_the_distinct_matmuls_and_convolutions_with_their_counts():
    x = jax.random.normal(jax.random.key(1), (8, 12, 12, 3))
    conv = nn.Conv(16, (3, 3), strides=(2, 2), use_bias=False)
    params = conv.init(jax.random.key(0), x)
    both = jax.grad(lambda p, x: conv.apply(p, x).sum(), argnums=(0, 1))
    found = flops.products(both, params, x)
    # Forward, kernel gradient, input gradient: three different convolutions, once each.
    assert sorted(p.primitive.name for p in found) == ["conv_general_dilated"] * 3
    assert sum(p.flops * p.times for p in found) == flops.count(both, params, x)
    # A product runs again on other operands of its shapes: the forward is the layer.
    (forward,) = [p for p in found if p.operands[0].shape == x.shape and p.times == 1][:1]
    kernel = params["params"]["kernel"]
    np.testing.assert_allclose(forward.run(x, kernel), conv.apply(params, x), rtol=1e-5)
    assert "conv_general_dilated (8, 12, 12, 3)" in forward.describe()

    def repeated(a, b):  # The same matmul three times in a scan and twice outside: one entry.
        y = jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=3)[0]
        return (y @ b) @ b

    (matmul,) = flops.products(repeated, jnp.ones((4, 4)), jnp.ones((4, 4)))
    assert matmul.times == 5 and matmul.flops == 2 * 4 * 4 * 4


def test_a_convolution_is_timed_channels_last_as_the_same_product():
    """--floor restates a convolution on transposed operands: it must stay the same sum of
    products (here a kernel gradient, whose contracted feature is the batch)."""
    x = jax.random.normal(jax.random.key(1), (6, 9, 9, 3))
    conv = nn.Conv(5, (3, 3), use_bias=False)
    params = conv.init(jax.random.key(0), x)
    grad = jax.grad(lambda p: conv.apply(p, x).sum())
    found = flops.products(grad, params)
    (kernel_grad,) = [p for p in found if p.operands[1].shape == (6, 9, 9, 5)]  # x and g
    operands = [
        jax.random.normal(jax.random.key(i), o.shape) for i, o in enumerate(kernel_grad.operands)
    ]
    run, restated = benchmark._channels_last(kernel_grad, operands)
    expected = kernel_grad.run(*operands)
    got = run(*restated)
    assert got.size == expected.size
    np.testing.assert_allclose(np.sort(got.ravel()), np.sort(expected.ravel()), rtol=1e-4)
    np.testing.assert_allclose(got.sum(), expected.sum(), rtol=1e-4)


def test_floor_times_each_product_alone_and_the_optimizer():
    found = flops.products(lambda a, b: a @ b, jnp.ones((16, 32)), jnp.ones((32, 8)))
    row = {"steps_per_s": 100.0, "gflop_per_step": 2 * 16 * 32 * 8 / 1e9}
    floor = benchmark._floor(row, found, None, seconds=0.05)  # No optimizer: the DCGAN's case.
    assert floor["step_ms"] == pytest.approx(10.0) and floor["optimizer_ms"] is None
    ((entry),) = floor["products"]
    assert entry["times"] == 1 and entry["ms"] > 0 and "(16, 32) x (32, 8)" in entry["product"]
    assert floor["rest_ms"] == pytest.approx(10.0 - entry["ms"])
    state = steps_ae.create_state(Autoencoder(latent_dim=2), 1e-3, jax.random.key(0))
    assert benchmark.optimizer_seconds(state, seconds=0.05) > 0


@pytest.mark.slow
def test_benchmark_times_the_autoencoder_and_writes_its_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--models=autoencoder",
        "--batch_sizes=16",
        "--seconds=0.2",
        "--dispatch_steps=20",
        "--matmul_size=256",
        "--floor=true",
        f"--out={out}",
    ]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["matmul_gflops"] > 0 and result["machine"]["backend"] == "cpu"
    (row,) = result["rows"]
    assert row["model"] == "autoencoder" and row["batch_size"] == 16
    assert row["steps_per_s"] > 0 and row["images_per_s"] == pytest.approx(16 * row["steps_per_s"])
    assert row["timed_dispatches"] >= 2 and row["steps_per_dispatch"] == 20
    assert 0 < row["peak_host_mb"] < 8000 and row["compile_s"] >= 0
    # 784-512-2-512-784: the first layer needs no input gradient (2 products), the rest 3.
    per_image = 2 * (2 * 784 * 512 + 3 * 512 * 2 + 3 * 2 * 512 + 3 * 512 * 784)
    assert row["gflop_per_step"] == pytest.approx(16 * per_image / 1e9, rel=1e-9)
    assert row["gflops"] == pytest.approx(row["gflop_per_step"] * row["steps_per_s"])
    # --floor: every matmul of the step timed alone, and its Adam update; the rest is
    # what the step spends besides them.
    floor = row["floor"]
    assert floor["step_ms"] == pytest.approx(1e3 / row["steps_per_s"])
    assert sum(p["times"] for p in floor["products"]) == 11  # 4 forward, 7 backward.
    assert all(p["ms"] > 0 for p in floor["products"]) and floor["optimizer_ms"] > 0
    parts = sum(p["ms"] for p in floor["products"]) + floor["optimizer_ms"]
    assert floor["rest_ms"] == pytest.approx(floor["step_ms"] - parts)
    table = capsys.readouterr().out
    assert "autoencoder" in table and "GFLOP/s" in table and str(out) in table
    assert "optimizer alone" in table


def test_bad_benchmark_flags_are_refused(capsys):
    assert benchmark.main(["--models=gan"]) == 2
    assert "--models=gan: choose from autoencoder, vae, dcgan" in capsys.readouterr().err
    assert benchmark.main(["--batch_sizes=32,x"]) == 2
    assert "expected integers" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_mode_times_the_keras_model_and_prints_the_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--models=vae",
        "--batch_sizes=8",
        "--seconds=0.1",
        "--dispatch_steps=3",
        "--matmul_size=128",
        "--compare=keras,torch",
        f"--out={out}",
    ]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    keras_row, torch_row = result["comparisons"]
    assert keras_row["framework"].startswith("keras") and keras_row["model"] == "vae"
    assert keras_row["steps_per_s"] > 0 and keras_row["jit_compile"] in (True, False)
    # The fastest of the settings a user tuning Keras would try: XLA off/on, fit() with 1
    # or 100 steps per call.
    tried = {(v["jit_compile"], v["steps_per_execution"]) for v in keras_row["variants"]}
    assert tried == {(False, 1), (True, 1), (False, 100), (True, 100)}
    assert keras_row["steps_per_s"] == max(v["steps_per_s"] for v in keras_row["variants"])
    mine = result["rows"][0]["steps_per_s"]
    assert keras_row["speedup"] == pytest.approx(mine / keras_row["steps_per_s"])
    captured = capsys.readouterr()
    assert "genjax x" in captured.out
    # PyTorch is not a dependency (CI has none; its CPU wheel comes from PyTorch's index):
    # timed where installed, else reported as skipped with how to install it.
    if importlib.util.find_spec("torch") is not None:
        assert torch_row["framework"].startswith("torch") and torch_row["model"] == "vae"
        assert torch_row["speedup"] == pytest.approx(mine / torch_row["steps_per_s"])
        assert "torch 2." in captured.out
    else:
        install = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
        assert torch_row == {"framework": "torch", "skipped": f"not installed: {install}"}
        assert "torch: skipped" in captured.err


@pytest.mark.slow
def test_repeated_rounds_report_the_median_and_the_logging_cost(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--models=autoencoder",
        "--batch_sizes=16",
        "--seconds=0.1",
        "--dispatch_steps=10",
        "--matmul_size=128",
        "--repeats=3",
        "--logging_cost=true",
        "--logging_flags=--epochs=1 --steps_per_epoch=30 --steps_per_dispatch=5 "
        "--latent_points=200",
        f"--out={out}",
    ]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    rounds = row["rounds_steps_per_s"]
    assert len(rounds) == 3 and row["steps_per_s"] == sorted(rounds)[1]
    # The ceiling is the faster of XLA's and NumPy's matmul.
    assert result["matmul_gflops"] == max(result["xla_gflops"], result["numpy_gflops"]) > 0
    (logged,) = result["logging"]
    assert logged["command"] == (
        "autoencoder --epochs=1 --steps_per_epoch=30 --steps_per_dispatch=5 --latent_points=200"
    )
    assert 0 < logged["logging_s"] < logged["wall_s"]
    assert logged["logging_share"] == pytest.approx(logged["logging_s"] / logged["wall_s"])
    # Six dispatches of 5 steps, the first compiling: five timed, beside logging or alone.
    assert logged["dispatches_alone"] + logged["dispatches_beside_logging"] == 5
    printed = capsys.readouterr().out
    assert "after 1st" in printed and "dispatches beside/alone" in printed
    assert "cost after 1st" in printed
