"""Checkpoints, exact resume, signals, the NaN guard and clear errors, on real processes."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import autoencoder
from genjax import data, images, loop, wandb_logging
from genjax.checkpoint import Checkpoints
from genjax.config import AutoencoderConfig, parse_flags
from genjax.steps import autoencoder as steps
from genjax.trainers import EpochTrainer
from tests.conftest import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """3,200 real training and 500 test images as IDX files: short epochs, real pixels."""
    return write_idx_dataset(tmp_path_factory.mktemp("data"), n_train=3200, n_test=500)


def _flags(small_data, workdir, **overrides):
    flags = dict(
        data_dir=small_data,
        data_source="idx",
        workdir=workdir,
        wandb_mode="offline",
        epochs=5,
        steps_per_dispatch=10,
        checkpoint_interval=50,
        latent_points=200,
        progress="false",
    )
    return [f"--{k}={v}" for k, v in {**flags, **overrides}.items()]


def _env(home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # matplotlib's font cache lives under HOME; share one so each process does not rebuild it.
    mpl = home.parent.parent / "mplconfig"
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", "MPLCONFIGDIR": str(mpl)}


def _start(small_data, workdir, home, **overrides):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.autoencoder",
            *_flags(small_data, workdir, **overrides),
        ],
        cwd=ROOT,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _wait_for_checkpoint(proc, workdir: Path, timeout=240):
    """Polls until the run has written a complete checkpoint; fails if the run ends first."""
    deadline = time.monotonic() + timeout
    folder = workdir / "checkpoints"
    while time.monotonic() < deadline:
        if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _summary(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory):
    """The reference: the same run, never interrupted, in its own process."""
    tmp = tmp_path_factory.mktemp("reference")
    code, out, err = _finish(_start(small_data, tmp / "run", tmp / "home"))
    assert code == 0, err
    return _summary(tmp / "run")


@pytest.mark.slow
def test_kill_9_then_the_same_command_ends_bitwise_identical(small_data, tmp_path, uninterrupted):
    workdir, home = tmp_path / "run", tmp_path / "home"
    proc = _start(small_data, workdir, home)
    _wait_for_checkpoint(proc, workdir)
    proc.kill()  # SIGKILL: no handler runs, no checkpoint is written on the way out.
    proc.wait()
    assert not (workdir / "summary.json").exists(), "the run finished before the kill"
    code, out, err = _finish(_start(small_data, workdir, home))
    assert code == 0, err
    assert "resuming" in err
    resumed = _summary(workdir)
    assert resumed["state_sha256"] == uninterrupted["state_sha256"]
    for key in ("train/loss", "val/loss", "step", "epoch"):
        assert resumed[key] == uninterrupted[key], key
    # The resumed process continued the same W&B run.
    run_dirs = wandb_logging.find_run_dirs(workdir)
    assert len(run_dirs) == 2
    ids = {wandb_logging.read_run(d)["run_id"] for d in run_dirs}
    assert ids == {resumed["wandb_run"]["id"]}
    history = wandb_logging.read_run(run_dirs[1])["history"]
    assert history[-1]["_step"] == 5 and history[-1]["val/loss"] == resumed["val/loss"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_matches(small_data, tmp_path, uninterrupted):
    workdir, home = tmp_path / "run", tmp_path / "home"
    proc = _start(small_data, workdir, home)
    _wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM received: stopped at step" in err and "Traceback" not in err
    stopped_at = int(err.split("stopped at step ")[1].split()[0])
    assert Checkpoints(workdir).latest_step() == stopped_at
    first_run = wandb_logging.read_run(wandb_logging.find_run_dirs(workdir)[0])
    assert first_run["state"] != "finished"  # Marked preempted/failed, not finished.
    code, out, err = _finish(_start(small_data, workdir, home))
    assert code == 0, err
    assert _summary(workdir)["state_sha256"] == uninterrupted["state_sha256"]


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(small_data, tmp_path, wandb_home, capsys):
    workdir = tmp_path / "run"
    argv = _flags(small_data, workdir, epochs=1, wandb_mode="disabled")
    assert autoencoder.main(argv) == 0
    before = _summary(workdir)
    steps_before = Checkpoints(workdir).all_steps()
    capsys.readouterr()
    assert autoencoder.main(argv) == 0
    assert "is already complete at step 100" in capsys.readouterr().out
    assert _summary(workdir) == before and Checkpoints(workdir).all_steps() == steps_before
    # Asking for more epochs continues from the checkpoint.
    assert autoencoder.main(_flags(small_data, workdir, epochs=2, wandb_mode="disabled")) == 0
    assert _summary(workdir)["step"] == 2 * before["step"]


def _poisoned_family(bad_step: int) -> loop.Family:
    """The autoencoder, but the update of step `bad_step` turns the parameters into NaN."""

    def train_step(state, batch, key):
        state, metrics = steps.train_step(state, batch, key)
        poison = jnp.where(state.step == bad_step, jnp.nan, 0.0)
        state = state.replace(params=jax.tree.map(lambda p: p + poison, state.params))
        return state, {"loss": metrics["loss"] + poison}

    return loop.Family(
        "autoencoder",
        jax.jit(train_step),
        steps.eval_step,
        steps.PIXEL_RANGE,
        eval_outputs=steps.EVAL_OUTPUTS,
    )


@pytest.mark.slow
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(small_data, tmp_path, wandb_home):
    workdir = tmp_path / "run"
    config = parse_flags(
        AutoencoderConfig, _flags(small_data, workdir, epochs=2, checkpoint_interval=20)
    )
    dataset = data.load_dataset("fashion_mnist", str(small_data), "idx")
    from genjax.models.autoencoder import Autoencoder

    def init_state(key):
        return steps.create_state(Autoencoder(), config.learning_rate, key)

    # Dispatches of 10 steps, checkpoints every 20: steps 20 and 40 are saved, 47 is bad.
    with pytest.raises(loop.NonFiniteError, match=r"train/loss is nan at step 47"):
        trial = loop.Trial(config, init_state, lambda state, step, outputs: {})
        loop.run(trial, _poisoned_family(47), dataset, EpochTrainer(config, dataset))
    checkpoints = Checkpoints(workdir)
    assert checkpoints.latest_step() == 40  # The last good one; nothing saved after it.
    state, record = checkpoints.restore(init_state(jax.random.key(0)))
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))
    assert record["step"] == 40
    run = wandb_logging.read_run(wandb_logging.find_run_dirs(workdir)[0])
    assert run["state"] == "failed"
    assert "train/loss is nan at step 47" in run["summary"]["failure"]
    assert not (workdir / "summary.json").exists()


def test_an_epochs_row_waits_for_its_checkpoint_and_starts_with_the_next_dispatch(
    small_data, tmp_path, wandb_home, monkeypatch
):
    """The epoch trainer holds the epoch's row while it checkpoints (the W&B worker slowed
    the save, unmeasured); the next dispatch's start releases it; the last epoch's row is
    flushed with the summary, before the final checkpoint."""
    config = parse_flags(
        AutoencoderConfig,
        _flags(
            small_data, tmp_path / "run", epochs=3, checkpoint_interval=0, wandb_mode="disabled"
        ),
    )
    dataset = data.load_dataset("fashion_mnist", str(small_data), "idx")
    events = []
    save, start = loop.RunContext.save, loop.DispatchClock.start

    def saving(self, step, state, **extra):
        events.append(("saved", step))
        return save(self, step, state, **extra)

    def starting(self, runs, ready=None):
        events.append(("dispatch", None))
        return start(self, runs, ready)

    monkeypatch.setattr(loop.RunContext, "save", saving)
    monkeypatch.setattr(loop.DispatchClock, "start", starting)

    def render(epoch):
        events.append(("row", epoch))
        return np.zeros((8, 8, 1), np.uint8)

    def media(state, epoch, outputs):
        return {"images": {"p": images.Deferred(functools.partial(render, epoch))}}

    family = autoencoder.EXPERIMENT.family(config)
    trial = loop.Trial(config, autoencoder.trial(config, dataset).init_state, media)
    loop.run(trial, family, dataset, EpochTrainer(config, dataset))
    for epoch in (1, 2):  # 100 steps an epoch.
        saved = events.index(("saved", 100 * epoch))
        released = events.index(("dispatch", None), saved)  # The next dispatch's start.
        assert released < events.index(("row", epoch)), events
    assert events.index(("row", 3)) < events.index(("saved", 300)), events


def _cli(args, tmp_path, **env):
    return subprocess.run(
        [sys.executable, "-m", "experiments.autoencoder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**_env(tmp_path / "home"), "WANDB_MODE": "disabled", **env},
    )


@pytest.mark.slow
def test_a_shape_change_against_an_existing_workdir_is_refused(small_data, tmp_path, wandb_home):
    workdir = tmp_path / "run"
    assert autoencoder.main(_flags(small_data, workdir, epochs=1, wandb_mode="disabled")) == 0
    saved = Checkpoints(workdir).latest_step()
    for flag, message in [
        ("--latent_dim=10", "holds a checkpoint of a different run: --latent_dim=2 (asked: 10)"),
        ("--steps_per_dispatch=7", "--steps_per_dispatch=10 (asked: 7)"),
        ("--learning_rate=0.01", "--learning_rate=0.001 (asked: 0.01)"),
    ]:
        name, value = flag[2:].split("=")
        result = _cli(_flags(small_data, workdir, **{name: value}), tmp_path)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    # Another experiment on the same workdir is refused too, before orbax sees it.
    vae = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.vae",
            f"--workdir={workdir}",
            f"--data_dir={small_data}",
            "--data_source=idx",
            "--eval_samples=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**_env(tmp_path / "home"), "WANDB_MODE": "disabled"},
    )
    assert vae.returncode == 2 and "holds a checkpoint of a 'autoencoder' run" in vae.stderr
    assert Checkpoints(workdir).latest_step() == saved


@pytest.mark.parametrize(
    "args, message",
    [
        (["--latent_dims=3"], "error: unknown flag --latent_dims"),
        (["--latent_dim=two"], "error: --latent_dim=two: expected an integer"),
        (["--latent_dim=0"], "error: --latent_dim=0: must be at least 1"),
        (["--learning_rate=-0.1"], "error: --learning_rate=-0.1: the learning rate must be"),
        (["--batch_size=3201"], "error: --batch_size=3201 is larger than the training split"),
        (["--checkpoint_interval=-5"], "error: --checkpoint_interval=-5: must be 0 or more"),
        (["--dataset=cifar11"], "error: unknown dataset 'cifar11'"),
    ],
)
def test_bad_config_is_one_line_exit_2(args, message, small_data, tmp_path):
    base = [f"--data_dir={small_data}", "--data_source=idx", f"--workdir={tmp_path / 'w'}"]
    result = _cli(base + args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_unwritable_workdir_is_refused_at_start(small_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _cli(_flags(small_data, blocker / "run"), tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"--workdir={blocker / 'run'} cannot be written" in result.stderr


def test_a_full_disk_is_refused_at_start(small_data, tmp_path):
    result = _cli(_flags(small_data, tmp_path / "run", min_free_disk_mb=10**12), tmp_path)
    assert result.returncode == 2, result.stderr
    assert "MB free, less than --min_free_disk_mb=1000000000000" in result.stderr


@pytest.mark.slow
def test_training_completes_with_wandb_unreachable(small_data, tmp_path):
    result = _cli(
        _flags(small_data, tmp_path / "run", epochs=1, wandb_mode="online", wandb_init_timeout=3),
        tmp_path,
        WANDB_MODE="",
        WANDB_BASE_URL="http://127.0.0.1:9",
        WANDB_API_KEY="k" * 40,
    )
    assert result.returncode == 0, result.stderr
    assert "logging offline" in result.stderr
    summary = _summary(tmp_path / "run")
    assert summary["wandb_run"]["mode"] == "offline" and np.isfinite(summary["val/loss"])


@pytest.mark.slow
def test_checkpoints_fall_on_dispatch_ends_after_each_interval(small_data, tmp_path, wandb_home):
    workdir = tmp_path / "run"
    argv = _flags(
        small_data,
        workdir,
        epochs=1,
        steps_per_dispatch=15,
        checkpoint_interval=20,
        max_to_keep=10,
        wandb_mode="disabled",
    )
    assert autoencoder.main(argv) == 0
    # 100 steps in dispatches ending at 15, 30, 45, ..., 90, 100: the first end at or after
    # each multiple of 20, and the epoch's end.
    assert Checkpoints(workdir).all_steps() == [30, 45, 60, 90, 100]
