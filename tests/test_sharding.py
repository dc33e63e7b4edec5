"""Data parallelism on 2 fake CPU devices: the same commands, the same results as one device.

Each run is its own process: the fake device count (XLA_FLAGS) is read when jax starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import registry
from genjax import wandb_logging
from tests.conftest import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return write_idx_dataset(tmp_path_factory.mktemp("data"), n_train=640, n_test=200)


def _run(module: str, flags: list[str], devices: int, tmp_path: Path):
    return _python(["-m", module, *flags], devices, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_processes(module: str | None, flags: list[str], tmp_path: Path, processes: int = 2):
    """One run as `processes` hosts would start it: a process each, one CPU device each,
    joined through a coordinator on localhost (jax's gloo collectives between them).
    module None: flags are python's own arguments (-c SCRIPT)."""
    coordinator = f"localhost:{_free_port()}"
    procs = []
    for index in range(processes):
        env = _env(1, tmp_path) | {
            "JAX_COORDINATOR_ADDRESS": coordinator,
            "JAX_NUM_PROCESSES": str(processes),
            "JAX_PROCESS_ID": str(index),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *(["-m", module] if module else []), *flags],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)  # Never hang CI on a lost peer.
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return results


def _run_python(script: str, devices: int, tmp_path: Path):
    return _python(["-c", script], devices, tmp_path)


def _env(devices: int, tmp_path: Path) -> dict[str, str]:
    # The session's compilation cache is kept (conftest): a resumed process, and the
    # programs that do not depend on the device count (the DCGAN's initialization, ~5 s to
    # compile), are then not compiled again.
    keep = {"JAX_COMPILATION_CACHE_DIR"}
    env = {k: v for k, v in os.environ.items() if k in keep or not k.startswith(("WANDB_", "JAX_"))}
    return env | {
        # Beside the suite's own flags (conftest): the device count is the last word.
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={devices}".strip(),
        "HOME": str(tmp_path / "home"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }


def _python(args: list[str], devices: int, tmp_path: Path):
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=_env(devices, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,  # Cross-device collectives on a loaded 2-core machine: never hang CI.
    )


def _params(workdir: Path, experiment):
    _, _, state = registry.restore(workdir)
    return state


def _mlp_flags(module: str, data_dir: Path, workdir: Path, **overrides) -> list[str]:
    flags = {
        "data_dir": data_dir,
        "data_source": "idx",
        "workdir": workdir,
        "wandb_mode": "disabled",
        "epochs": 2,
        "steps_per_dispatch": 7,
        "latent_points": 100,
        "progress": "false",
    }
    if module in ("experiments.vae", "experiments.autoencoder"):
        flags["eval_samples"] = 0
    return [f"--{k}={v}" for k, v in (flags | overrides).items()]


def _experiment(module: str):
    return registry.EXPERIMENTS[module.removeprefix("experiments.")]


@pytest.fixture(scope="module")
def one_device(small_data, tmp_path_factory):
    """Each MLP experiment's 2-epoch run on one device, in its own process: the reference."""
    runs = {}

    def get(module: str):
        if module not in runs:
            tmp = tmp_path_factory.mktemp("one_device")
            result = _run(module, _mlp_flags(module, small_data, tmp / "run"), 1, tmp)
            assert result.returncode == 0, result.stderr
            assert "on 1 device" in result.stderr
            runs[module] = (
                json.loads((tmp / "run" / "summary.json").read_text()),
                _params(tmp / "run", _experiment(module)),
            )
        return runs[module]

    return get


def _assert_same_training(summary, state, reference, rel=1e-5, atol=1e-6) -> None:
    import jax

    ref_summary, ref_state = reference
    for key in ("train/loss", "val/loss"):
        assert summary[key] == pytest.approx(ref_summary[key], rel=rel), key
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol),
        ref_state.params,
        state.params,
    )


@pytest.mark.slow
@pytest.mark.parametrize("module", ["experiments.autoencoder", "experiments.vae"])
def test_two_devices_train_what_one_device_trains(tmp_path, small_data, module, one_device):
    workdir = tmp_path / "run2"
    result = _run(module, _mlp_flags(module, small_data, workdir), 2, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "on 2 devices" in result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    _assert_same_training(summary, _params(workdir, _experiment(module)), one_device(module))


@pytest.mark.slow
def test_two_processes_train_and_resume_what_one_device_trains(tmp_path, small_data, one_device):
    """Several hosts, as two processes here: the same command, an epoch, then a resume to
    the second; the numbers of one device, one W&B run (the first process's) continued."""
    module = "experiments.autoencoder"
    workdir = tmp_path / "run"
    for epochs in (1, 2):
        flags = _mlp_flags(module, small_data, workdir, epochs=epochs, wandb_mode="offline")
        results = _run_processes(module, flags, tmp_path)
        for index, result in enumerate(results):
            assert result.returncode == 0, f"process {index}:\n{result.stderr}"
            assert "on 2 devices (cpu), the batch sharded" in result.stderr
            if epochs == 2:
                assert f"resuming {workdir} from step 20" in result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    _assert_same_training(summary, _params(workdir, _experiment(module)), one_device(module))
    # The first process alone logs: one offline run, started and then resumed.
    run_dirs = wandb_logging.find_run_dirs(workdir)
    assert len(run_dirs) == 2
    first, resumed = (wandb_logging.read_run(d) for d in run_dirs)
    assert first["run_id"] == resumed["run_id"] == summary["wandb_run"]["id"]
    assert [row["_step"] for row in first["history"]] == [1]
    assert resumed["history"][-1]["_step"] == 2
    assert resumed["history"][-1]["val/loss"] == summary["val/loss"]
    assert resumed["state"] == "finished"
    assert (workdir / "images" / "reconstructions.png").exists()


def test_every_process_follows_the_first_ones_value(tmp_path):
    """What a sweep's processes plan from: the first process's value on each (values of
    different lengths: the receivers learn its size first)."""
    script = (
        "import json, os\n"
        "from genjax import sharding\n"
        "sharding.initialize()\n"
        "index = int(os.environ['JAX_PROCESS_ID'])\n"
        "print(json.dumps(sharding.from_first_process([index, 'x' * (1000 + 500 * index)])))\n"
    )
    results = _run_processes(None, ["-c", script], tmp_path)
    for index, result in enumerate(results):
        assert result.returncode == 0, f"process {index}:\n{result.stderr}"
        assert json.loads(result.stdout.strip().splitlines()[-1]) == [0, "x" * 1000]


@pytest.mark.slow
def test_a_vectorized_sweep_and_its_evaluation_on_two_processes(tmp_path, small_data, one_device):
    """experiments.sweep and experiments.evaluate as two hosts: the first process's plan is
    every process's, the trials train as one device trains them, and sweep.json, the
    comparison, its W&B run and evaluation.json come from the first process alone."""
    import yaml

    spec = {
        "program": "experiments/autoencoder.py",
        "method": "grid",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {"learning_rate": {"values": [0.001, 0.003]}},
    }
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    workdir = tmp_path / "sweep"
    flags = _mlp_flags("experiments.autoencoder", small_data, workdir, wandb_mode="offline")
    argv = [str(sweep_file), *flags, "--vectorize"]  # --workdir is the sweep's here.
    for index, result in enumerate(_run_processes("experiments.sweep", argv, tmp_path)):
        assert result.returncode == 0, f"process {index}:\n{result.stderr}"
        assert "2 trials vectorized" in result.stdout
    trials = json.loads((workdir / "sweep.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["finished", "finished"]
    assert [t["params"]["learning_rate"] for t in trials] == [0.001, 0.003]
    # Trial 0 has the one-device run's settings: vmapped over two hosts, the same numbers.
    trial0 = Path(trials[0]["workdir"])
    summary = json.loads((trial0 / "summary.json").read_text())
    state = _params(trial0, _experiment("experiments.autoencoder"))
    # Vmapped trials round differently from a lone run: the sweeps tests' tolerance.
    _assert_same_training(summary, state, one_device("experiments.autoencoder"), 1e-4, 1e-5)
    assert (workdir / "comparison.png").is_file()
    assert len(wandb_logging.find_run_dirs(workdir / "summary")) == 1
    for trial in trials:
        assert len(wandb_logging.find_run_dirs(trial["workdir"])) == 1

    evaluated = _run_processes("experiments.evaluate", [f"--workdir={trial0}"], tmp_path)
    for index, result in enumerate(evaluated):
        assert result.returncode == 0, f"process {index}:\n{result.stderr}"
    figures = json.loads((trial0 / "evaluation.json").read_text())
    assert figures["eval/recon_mse"] == pytest.approx(summary["eval/recon_mse"], rel=1e-5)


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {},
            "JAX_COORDINATOR_ADDRESS=localhost:1234 is set but JAX_NUM_PROCESSES and "
            "JAX_PROCESS_ID are not: set JAX_NUM_PROCESSES to the number of processes",
        ),
        ({"JAX_NUM_PROCESSES": "2"}, "localhost:1234 is set but JAX_PROCESS_ID is not"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID=2 is not an index"),
        ({"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "must be whole numbers"),
    ],
)
def test_a_coordinator_without_process_count_and_index_is_refused(
    tmp_path, small_data, monkeypatch, capsys, env, message
):
    from experiments import autoencoder

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    for key in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    flags = _mlp_flags("experiments.autoencoder", small_data, tmp_path / "run")
    assert autoencoder.main(flags) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "run").exists()  # Refused before anything was written.


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
            "--val_examples=0",
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
