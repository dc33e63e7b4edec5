"""Data parallelism on 2 fake CPU devices: the same commands, the same results as one device.

Each run is its own process: the fake device count (XLA_FLAGS) is read when jax starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return write_idx_dataset(tmp_path_factory.mktemp("data"), n_train=640, n_test=200)


def _run(module: str, flags: list[str], devices: int, tmp_path: Path):
    return _python(["-m", module, *flags], devices, tmp_path)


def _run_python(script: str, devices: int, tmp_path: Path):
    return _python(["-c", script], devices, tmp_path)


def _python(args: list[str], devices: int, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "HOME": str(tmp_path / "home"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # Cross-device collectives on a loaded 2-core machine: never hang CI.
    )


def _params(workdir: Path, experiment):
    _, state, _ = experiment.restore(workdir)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("module", ["experiments.autoencoder", "experiments.vae"])
def test_two_devices_train_what_one_device_trains(tmp_path, small_data, module):
    import jax

    from experiments import autoencoder, vae

    experiment = {"experiments.autoencoder": autoencoder, "experiments.vae": vae}[module]
    summaries, states = [], []
    for devices in (1, 2):
        workdir = tmp_path / f"run{devices}"
        flags = [
            f"--data_dir={small_data}",
            "--data_source=idx",
            f"--workdir={workdir}",
            "--wandb_mode=disabled",
            "--epochs=2",
            "--steps_per_dispatch=7",
            "--latent_points=100",
            "--progress=false",
        ]
        if module == "experiments.vae":
            flags.append("--eval_samples=0")
        result = _run(module, flags, devices, tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"on {devices} device" in result.stderr
        summaries.append(json.loads((workdir / "summary.json").read_text()))
        states.append(_params(workdir, experiment.EXPERIMENT))
    one, two = summaries
    for key in ("train/loss", "val/loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        states[0].params,
        states[1].params,
    )


@pytest.mark.slow
def test_two_devices_train_the_dcgan_as_one_does(tmp_path, small_data):
    losses = []
    for devices in (1, 2):
        workdir = tmp_path / f"gan{devices}"
        flags = [
            f"--data_dir={small_data}",
            "--data_source=idx",
            f"--workdir={workdir}",
            "--wandb_mode=disabled",
            "--iterations=3",
            "--gen_interval=3",
            "--batch_size=16",
            "--eval_samples=0",
            "--progress=false",
        ]
        result = _run("experiments.dcgan", flags, devices, tmp_path)
        assert result.returncode == 0, result.stderr
        summary = json.loads((workdir / "summary.json").read_text())
        losses.append([summary[f"train/{k}"] for k in ("generator_loss", "discriminator_loss")])
    # Float rounding differs (gradients and BatchNorm statistics summed across devices), and
    # Adam turns the rounding noise of gradients that are 0 in exact arithmetic (convolution
    # biases before BatchNorm) into full-size steps: measured relative 3.7e-4 after 3
    # iterations once the generator's taps were summed before multiplying.
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)


def test_a_batch_that_does_not_divide_over_the_devices_is_refused(tmp_path, small_data):
    flags = [
        f"--data_dir={small_data}",
        "--data_source=idx",
        f"--workdir={tmp_path / 'run'}",
        "--wandb_mode=disabled",
        "--batch_size=33",
    ]
    result = _run("experiments.autoencoder", flags, 2, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--batch_size=33 does not divide over the 2 devices" in result.stderr
    assert "use a multiple of 2 (e.g. --batch_size=32)" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batches_are_split_over_the_devices_and_the_data_replicated(tmp_path):
    """Not only the same numbers: each device holds half of every batch."""
    script = """
import jax, jax.numpy as jnp, numpy as np
from genjax import data
from genjax.steps import fused
split = data.to_device(data.Split(np.zeros((64, 28, 28, 1), np.uint8), np.zeros(64, np.int32)))
batch = jax.jit(lambda im, lab: fused._batch(im, lab, jnp.arange(8), (0.0, 1.0)))(
    split.images, split.labels)
print(split.images.sharding.is_fully_replicated, len(split.images.sharding.device_set))
print(batch["image"].sharding.spec, [s.data.shape[0] for s in batch["image"].addressable_shards])
"""
    result = _run_python(script, 2, tmp_path)
    assert result.returncode == 0, result.stderr
    replicated, spec = result.stdout.strip().splitlines()
    assert replicated == "True 2"
    assert spec == "P('data',) [4, 4]"
