"""The benchmark command: its cases run the experiments' code; rounds, comparisons, the floor
and the logging share all reach its table and JSON."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import run as benchmark
from genjax.loops import iterations
from genjax.steps import diffusion as diffusion_steps


@pytest.mark.slow
def test_benchmark_times_the_autoencoder_in_rounds_with_its_floor_and_logging(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--models=autoencoder",
        "--batch_sizes=16",
        "--seconds=0.2",
        "--dispatch_steps=20",
        "--matmul_size=256",
        "--floor=true",
        "--repeats=2",
        "--logging_cost=true",
        "--logging_flags=--epochs=1 --steps_per_epoch=30 --steps_per_dispatch=5 "
        "--latent_points=200",
        f"--out={out}",
    ]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["machine"]["backend"] == "cpu"
    # The ceiling is the faster of XLA's and NumPy's matmul.
    assert result["matmul_gflops"] == max(result["xla_gflops"], result["numpy_gflops"]) > 0
    (row,) = result["rows"]
    assert row["model"] == "autoencoder" and row["batch_size"] == 16
    rounds = row["rounds_steps_per_s"]  # The median round's figures are reported.
    assert len(rounds) == 2 and row["steps_per_s"] == min(rounds)
    assert row["steps_per_s"] > 0 and row["images_per_s"] == pytest.approx(16 * row["steps_per_s"])
    assert row["timed_dispatches"] >= 2 and row["steps_per_dispatch"] == 20
    assert 0 < row["peak_host_mb"] < 8000 and row["compile_s"] >= 0
    # 784-512-2-512-784: the first layer needs no input gradient (2 products), the rest 3.
    per_image = 2 * (2 * 784 * 512 + 3 * 512 * 2 + 3 * 2 * 512 + 3 * 512 * 784)
    assert row["gflop_per_step"] == pytest.approx(16 * per_image / 1e9, rel=1e-9)
    assert row["gflops"] == pytest.approx(row["gflop_per_step"] * row["steps_per_s"])
    # --floor: every matmul of the step timed alone, and its Adam update; the rest is
    # what the step spends besides them.
    timed = row["floor"]
    assert timed["step_ms"] == pytest.approx(1e3 / row["steps_per_s"])
    assert sum(p["times"] for p in timed["products"]) == 11  # 4 forward, 7 backward.
    assert all(p["ms"] > 0 for p in timed["products"]) and timed["optimizer_ms"] > 0
    parts = sum(p["ms"] for p in timed["products"]) + timed["optimizer_ms"]
    assert timed["rest_ms"] == pytest.approx(timed["step_ms"] - parts)
    # --logging_cost: the experiment itself, and the share of its wall time logging took.
    (logged,) = result["logging"]
    assert logged["command"] == (
        "autoencoder --eval_samples=0 --epochs=1 --steps_per_epoch=30 --steps_per_dispatch=5 "
        "--latent_points=200"
    )
    assert logged["wall_s"] > 0 and 0 < logged["logging_share"] < 1
    table = capsys.readouterr().out
    assert "autoencoder" in table and "GFLOP/s" in table and str(out) in table
    assert "optimizer alone" in table and "logging share" in table


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
def test_the_torch_unet_side_is_genjax_unet_or_says_how_to_install_torch(tmp_path, capsys):
    model = "diffusion"  # Flow matching's side is the same U-Net and trainer, another loss.
    out = tmp_path / "bench.json"
    argv = [f"--models={model}", "--batch_sizes=4", "--seconds=0.05", "--dispatch_steps=2"]
    argv += ["--matmul_size=128", "--compare=torch,xla_defaults", f"--out={out}"]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    by_torch = sorted(result["comparisons"], key=lambda r: not r["framework"].startswith("torch"))
    torch_row, xla_row = by_torch
    # The same genjax step compiled with XLA's default options, beside the family's own.
    assert row["xla_options"] == iterations.compiler_options(diffusion_steps) != {}
    assert xla_row["framework"] == benchmark.XLA_DEFAULTS_LABEL and xla_row["xla_options"] == {}
    assert xla_row["model"] == model and xla_row["gflop_per_step"] == row["gflop_per_step"]
    assert xla_row["speedup"] == pytest.approx(row["steps_per_s"] / xla_row["steps_per_s"])
    captured = capsys.readouterr()
    assert benchmark.XLA_DEFAULTS_LABEL in captured.out
    if importlib.util.find_spec("torch") is not None:
        from benchmarks import torch_diffusion

        # The same parameter tensors as genjax's U-Net (checked before timing, every run).
        flax_sizes = torch_diffusion.flax_parameter_sizes(32, True)
        assert torch_row["parameters"] == sum(flax_sizes) == torch_diffusion.parameter_count()
        assert torch_row["model"] == model and torch_row["steps_per_s"] > 0
        assert {v["channels_last"] for v in torch_row["variants"]} == {False, True}
    else:
        assert torch_row["skipped"].startswith("not installed: pip install torch")
        assert "torch: skipped" in captured.err
