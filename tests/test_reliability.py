"""Checkpoints, exact resume, signals, the NaN guard and clear errors, on real processes."""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import autoencoder
from genjax import cli, data, run, wandb_logging
from genjax.checkpoint import Checkpoints
from genjax.config import AutoencoderConfig
from genjax.loops import epochs
from genjax.steps import autoencoder as steps
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
        eval_samples=0,  # No FID: no feature network of the repository's runs/.
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


def _wait_for(proc, condition, timeout=240):
    """Polls until condition() holds; fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the condition never held")


def _steps(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _wait_for_checkpoint(proc, workdir: Path, count=1, timeout=240):
    """Polls until the run has written `count` complete checkpoints."""
    _wait_for(proc, lambda: len(_steps(workdir)) >= count, timeout)


def _kill_9(proc) -> None:
    """SIGKILL: no handler runs, nothing is written on the way out."""
    assert proc.poll() is None, "the run ended before the kill"
    proc.kill()
    proc.wait()


def _wandb_history(workdir: Path) -> dict:
    """Every W&B run folder of the workdir read back: their run ids, the steps each holds, in
    the order the processes ran, and the last one's exit code."""
    runs = [wandb_logging.read_history(d) for d in wandb_logging.find_run_dirs(workdir)]
    return {
        "ids": {r["run_id"] for r in runs},
        "steps": [s for r in runs for s in sorted(r["steps"])],
        "exit_code": runs[-1]["exit_code"],
    }


def _damage(step_dir: Path) -> None:
    """Flips 64 bytes inside the checkpoint's largest array file."""
    array_file = max(
        (p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    raw = bytearray(array_file.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(b ^ 0xFF for b in raw[len(raw) // 2 :][:64])
    array_file.write_bytes(bytes(raw))


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
def test_kill_9_at_any_moment_then_the_same_command_ends_bitwise_identical(
    small_data, tmp_path, uninterrupted
):
    workdir, home = tmp_path / "run", tmp_path / "home"
    # Killed before its first checkpoint: the next start continues the same W&B run.
    first = _start(small_data, workdir, home)
    _wait_for(first, lambda: (workdir / "run.json").exists())
    _kill_9(first)
    assert _steps(workdir) == [], "the first checkpoint came before the kill"
    second = _start(small_data, workdir, home)
    _wait_for_checkpoint(second, workdir, count=2)
    # A second command on the same workdir is refused at once, naming its owner (stopped,
    # so that it cannot finish meanwhile; it still holds the workdir).
    second.send_signal(signal.SIGSTOP)
    code, out, err = _finish(_start(small_data, workdir, home), timeout=120)
    assert code == 2, err
    assert f"error: {workdir} is in use by process {second.pid}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    _kill_9(second)
    # The newest checkpoint damaged: the next start says so and resumes from the one before.
    newest = _steps(workdir)[-1]
    _damage(workdir / "checkpoints" / str(newest))
    code, out, err = _finish(_start(small_data, workdir, home))
    assert code == 0, err
    assert f"checkpoint {newest} in {workdir / 'checkpoints'} is damaged" in err
    assert list((workdir / "checkpoints_damaged").glob(f"{newest}-*"))
    resumed = _summary(workdir)
    assert resumed["state_sha256"] == uninterrupted["state_sha256"]
    for key in ("train/loss", "val/loss", "step", "epoch"):
        assert resumed[key] == uninterrupted[key], key
    # One W&B run across the three processes, holding every epoch's row exactly once.
    history = _wandb_history(workdir)
    assert history["ids"] == {resumed["wandb_run"]["id"]}
    assert history["steps"] == [1, 2, 3, 4, 5] and history["exit_code"] == 0
    last = wandb_logging.read_run(wandb_logging.find_run_dirs(workdir)[-1])
    assert last["history"][-1]["val/loss"] == resumed["val/loss"]


@pytest.mark.slow
def test_kill_9_after_the_last_checkpoint_then_the_rerun_finishes_the_wandb_run(
    small_data, tmp_path
):
    workdir, home = tmp_path / "run", tmp_path / "home"
    proc = _start(small_data, workdir, home, epochs=2)
    _wait_for(proc, lambda: 200 in _steps(workdir))
    _kill_9(proc)  # Before W&B's run was finished.
    assert _wandb_history(workdir)["exit_code"] is None
    code, out, err = _finish(_start(small_data, workdir, home, epochs=2))
    assert code == 0, err
    assert "is already complete at step 200" in out
    history = _wandb_history(workdir)
    assert len(history["ids"]) == 1 and history["steps"] == [1, 2]
    assert history["exit_code"] == 0
    last = wandb_logging.read_run(wandb_logging.find_run_dirs(workdir)[-1])
    assert last["state"] == "finished"
    assert last["summary"]["val/loss"] == _summary(workdir)["val/loss"]


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
    first_s = Checkpoints(workdir).newest_record()["train_s"]
    first_run = wandb_logging.read_run(wandb_logging.find_run_dirs(workdir)[0])
    assert first_run["state"] != "finished"  # Marked preempted/failed, not finished.
    code, out, err = _finish(_start(small_data, workdir, home))
    assert code == 0, err
    summary = _summary(workdir)
    assert summary["state_sha256"] == uninterrupted["state_sha256"]
    # The run's training time counts the first process's, up to its checkpoint.
    assert first_s > 0
    assert summary["time/train_s"] == pytest.approx(first_s + summary["time/wall_s"])
    history = _wandb_history(workdir)
    assert len(history["ids"]) == 1 and history["steps"] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_with_one_line(small_data, tmp_path):
    """Saves dominate this run, so the second SIGINT mostly lands inside orbax's writers."""
    workdir = tmp_path / "run"
    flags = dict(epochs=1, steps_per_dispatch=1, checkpoint_interval=1, wandb_mode="disabled")
    proc = _start(small_data, workdir, tmp_path / "home", **flags)
    _wait_for_checkpoint(proc, workdir, count=2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("stopped: "), err
    assert "Traceback" not in err and "ERROR" not in err and len(lines) == 2, err
    config = cli.parse(AutoencoderConfig, _flags(small_data, workdir, **flags))
    dataset = data.load_dataset("fashion_mnist", str(small_data), "idx")
    template = autoencoder.create_state(config, dataset.info, jax.random.key(0))
    checkpoints = Checkpoints(workdir, read_only=True)
    state, _ = checkpoints.restore_latest(template)  # Intact: its digest matches.
    checkpoints.close()
    assert int(state.step) > 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(small_data, tmp_path):
    """A file-size limit makes every checkpoint write fail as a full disk does (EFBIG for
    ENOSPC), without root: the last good checkpoint stands and one line says what to do."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # A failing write, not a killed process.
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    workdir = tmp_path / "run"
    env = _env(tmp_path / "home")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # Cache entries over the limit would warn.
    result = subprocess.run(
        [sys.executable, "-m", "experiments.autoencoder"]
        + _flags(small_data, workdir, wandb_mode="disabled", epochs=1),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: could not write the checkpoint of step 50"), lines
    assert "the last complete checkpoint is step None" in lines[-1]
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    assert len(lines) == 2, result.stderr  # "training on ..." and the error.


@pytest.mark.slow
def test_online_without_a_key_at_a_terminal_never_prompts(small_data, tmp_path):
    """W&B asks for a key at a terminal and waits for ever: under a pseudo-terminal whose
    input stays open, the run must log offline and end."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.autoencoder"]
        + _flags(small_data, tmp_path / "run", wandb_mode="online", epochs=1, steps_per_epoch=5),
        cwd=ROOT,
        env={**_env(tmp_path / "home"), "WANDB_BASE_URL": "http://127.0.0.1:9"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                try:
                    output += os.read(controller, 4096)
                except OSError:  # The terminal closed: the process ended.
                    break
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    text = output.decode(errors="replace")
    assert code == 0, text
    assert "Enter your choice" not in text
    assert "--wandb_mode=online but no W&B API key is configured: logging offline" in text
    assert _summary(tmp_path / "run")["wandb_run"]["mode"] == "offline"


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
    after = _summary(workdir)
    assert after["step"] == 2 * before["step"]
    # Its checkpoints gone, it is refused rather than trained afresh over its summary.
    shutil.rmtree(workdir / "checkpoints")
    capsys.readouterr()
    assert autoencoder.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{workdir} holds a finished run's summary.json but no checkpoint" in err
    assert _summary(workdir) == after


def _poisoned_steps(bad_step: int) -> types.SimpleNamespace:
    """The autoencoder's steps, but the update of step `bad_step` turns the parameters into
    NaN."""

    def train_step(state, batch, key):
        state, metrics = steps.train_step(state, batch, key)
        poison = jnp.where(state.step == bad_step, jnp.nan, 0.0)
        state = state.replace(params=jax.tree.map(lambda p: p + poison, state.params))
        return state, {"loss": metrics["loss"] + poison}

    return types.SimpleNamespace(
        train_step=jax.jit(train_step),
        eval_step=steps.eval_step,
        PIXEL_RANGE=steps.PIXEL_RANGE,
        EVAL_OUTPUTS=steps.EVAL_OUTPUTS,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad_step, kept, note",
    [
        (47, 40, "its last good checkpoint, step 40, is kept"),
        (7, None, "no checkpoint was written yet, so the same command starts afresh"),
    ],
)
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(
    small_data, tmp_path, wandb_home, bad_step, kept, note
):
    workdir = tmp_path / "run"
    config = cli.parse(
        AutoencoderConfig, _flags(small_data, workdir, epochs=2, checkpoint_interval=20)
    )
    dataset = data.load_dataset("fashion_mnist", str(small_data), "idx")

    def init_state(key):
        return autoencoder.create_state(config, dataset.info, key)

    # Dispatches of 10 steps, checkpoints every 20: steps 20 and 40 are saved before 47.
    failure = rf"train/loss is nan at step {bad_step}; training stopped .*; {note}"
    total = epochs.total_steps(config, dataset)
    with pytest.raises(run.NonFiniteError, match=failure):
        state = init_state(jax.random.key(0))
        with run.open("autoencoder", [config], [state], (), dataset, total) as runs:
            epochs.train(runs, dataset, _poisoned_steps(bad_step))
    checkpoints = Checkpoints(workdir)
    assert checkpoints.latest_step() == kept  # The last good one; nothing saved after it.
    if kept is not None:
        state, record = checkpoints.restore(init_state(jax.random.key(0)))
        assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))
        assert record["step"] == kept
    back = wandb_logging.read_run(wandb_logging.find_run_dirs(workdir)[0])
    assert back["state"] == "failed"
    assert re.search(failure, back["summary"]["failure"])
    assert not (workdir / "summary.json").exists()


def test_each_row_is_journaled_before_the_checkpoint_that_records_it(
    small_data, tmp_path, wandb_home, monkeypatch
):
    """A checkpoint names the last W&B step logged before it (what a resume must find in
    W&B), and that row is already in the journal, whatever W&B has written by then."""
    workdir = tmp_path / "run"
    config = cli.parse(
        AutoencoderConfig, _flags(small_data, workdir, epochs=3, checkpoint_interval=50)
    )
    saves = []
    save = Checkpoints.save

    def saving(self, step, state, record):
        journal = wandb_logging.read_journal(workdir / run.JOURNAL)
        saves.append((step, record["logged_step"], [r["step"] for r in journal]))
        return save(self, step, state, record)

    monkeypatch.setattr(Checkpoints, "save", saving)
    autoencoder.train([config])
    # 100 steps an epoch: mid-epoch checkpoints at 50, 150, 250 and one at each epoch's end.
    assert [(step, logged) for step, logged, _ in saves] == [
        (50, 0),
        (100, 1),
        (150, 1),
        (200, 2),
        (250, 2),
        (300, 3),
    ]
    for _, logged, journaled in saves:
        assert journaled == list(range(1, logged + 1))


def _cli(args, tmp_path, **env):
    return subprocess.run(
        [sys.executable, "-m", "experiments.autoencoder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            k: v
            for k, v in {**_env(tmp_path / "home"), "WANDB_MODE": "disabled", **env}.items()
            if v is not None  # None: not set at all.
        },
    )


@pytest.mark.slow
def test_a_shape_change_against_an_existing_workdir_is_refused(
    small_data, tmp_path, wandb_home, capsys
):
    workdir = tmp_path / "run"
    assert autoencoder.main(_flags(small_data, workdir, epochs=1, wandb_mode="disabled")) == 0
    saved = Checkpoints(workdir).latest_step()
    for flag, message in [
        ("--latent_dim=10", "holds a checkpoint of a different run: --latent_dim=2 (asked: 10)"),
        ("--steps_per_dispatch=7", "--steps_per_dispatch=10 (asked: 7)"),
        ("--learning_rate=0.01", "--learning_rate=0.001 (asked: 0.01)"),
    ]:
        name, value = flag[2:].split("=")
        capsys.readouterr()
        assert autoencoder.main(_flags(small_data, workdir, **{name: value})) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # Another experiment on the same workdir is refused too, before orbax sees it.
    from experiments import vae

    argv = [f"--workdir={workdir}", f"--data_dir={small_data}", "--data_source=idx"]
    assert vae.main([*argv, "--eval_samples=0", "--wandb_mode=disabled"]) == 2
    assert "holds a checkpoint of a 'autoencoder' run" in capsys.readouterr().err
    assert Checkpoints(workdir).latest_step() == saved


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--latent_dims=3"],
            "error: Unrecognized options: --latent_dims=3 (did you mean --latent_dim?)",
        ),
        (["--latent_dim=two"], "error: Error parsing --latent_dim: expected an integer, not 'two'"),
        (["--latent_dim=0"], "error: --latent_dim=0: must be at least 1"),
        (["--learning_rate=-0.1"], "error: --learning_rate=-0.1: the learning rate must be"),
        (["--batch_size=3201"], "error: --batch_size=3201 is larger than the training split"),
        (["--checkpoint_interval=-5"], "error: --checkpoint_interval=-5: must be 0 or more"),
        (["--dataset=cifar11"], "error: unknown dataset 'cifar11'"),
    ],
)
def test_bad_config_is_one_line_exit_2(args, message, small_data, tmp_path, capsys):
    base = [f"--data_dir={small_data}", "--data_source=idx", f"--workdir={tmp_path / 'w'}"]
    assert autoencoder.main(base + args) == 2
    err = capsys.readouterr().err
    assert err.strip() == message or err.strip().startswith(message), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_bad_input_in_a_real_process_is_one_line_and_exit_2(small_data, tmp_path):
    result = _cli([f"--data_dir={small_data}", "--latent_dim=two"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: Error parsing --latent_dim: expected an integer, not 'two'"
    ]


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
        WANDB_MODE=None,
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
