"""The DCGAN experiment: an end-to-end run read back from W&B, exact resume, signals."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import dcgan as dcgan_experiment
from experiments import evaluate as evaluate_main
from genjax import wandb_logging
from genjax.checkpoint import Checkpoints
from tests.conftest import write_idx_dataset

KEYS = [
    "train/discriminator_loss",
    "train/generator_loss",
    "train/discriminator_accuracy",
    "train/d_real",
    "train/d_fake",
]


@pytest.mark.slow
def test_end_to_end_run_reads_back_with_every_key(wandb_home, tmp_path, capsys, feature_net):
    workdir = tmp_path / "gan"
    argv = [
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--iterations=6",
        "--gen_interval=3",
        "--eval_interval=4",
        "--eval_samples=120",
        "--val_examples=32",
        "--eval_batch_size=16",
        f"--feature_net={feature_net}",
        "--batch_size=16",
        "--progress=false",
    ]
    assert dcgan_experiment.main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    back = wandb_logging.read_run(summary["wandb_run"]["dir"])
    assert back["config"]["iterations"] == 6 and back["config"]["latent_dim"] == 100
    history = back["history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4, 5, 6]  # log_interval 1: every one.
    for h in history:
        for key in KEYS:
            assert math.isfinite(h[key]), key
        assert 0 <= h["train/discriminator_accuracy"] <= 100
        assert 0 < h["train/d_real"] < 1 and 0 < h["train/d_fake"] < 1
    with_images = [h["_step"] for h in history if "generated_images._type" in h]
    assert with_images == [3, 6]
    assert history[-1]["generated_images.width"] == 5 * 30 + 2  # A 5x5 grid.
    assert summary["train/generator_loss"] == history[-1]["train/generator_loss"]
    err = capsys.readouterr().err
    assert "3 [D loss: " in err and "6 [D loss: " in err and "%] [G loss: " in err
    # FID, precision and recall every eval_interval and at the end, in W&B and summary.json.
    with_fid = [h["_step"] for h in history if "eval/fid" in h]
    assert with_fid == [4, 6]
    # The discriminator on the test split and as many fakes, at the same points.
    for h in history[3], history[5]:
        assert 0 < h["val/d_real"] < 1 and 0 < h["val/d_fake"] < 1
        assert 0 <= h["val/discriminator_accuracy"] <= 100
    for h in history[3], history[5]:
        assert 0 < h["eval/fid"] < 1e4 and 0 <= h["eval/precision"] <= 1
        assert 0 <= h["eval/recall"] <= 1 and h["eval/samples"] == 120
    for key in ("eval/fid", "eval/precision", "eval/recall", "eval/feature_net_accuracy"):
        assert summary[key] == history[5][key] == back["summary"][key], key
    assert history[3]["eval/fid"] != history[5]["eval/fid"]  # The generator moved.
    # experiments.evaluate: the same figures from the checkpoint, without training.
    assert evaluate_main.main([f"--workdir={workdir}", "--progress=false"]) == 0
    evaluated = json.loads((workdir / "evaluation.json").read_text())
    for key in ("eval/fid", "eval/precision", "eval/recall"):
        assert evaluated[key] == pytest.approx(summary[key], rel=1e-9), key
    assert evaluated["step"] == 6
    assert f"dcgan run {workdir} at step 6" in capsys.readouterr().out


def test_gen_interval_zero_is_refused(capsys):
    assert dcgan_experiment.main(["--gen_interval=0"]) == 2
    assert "--gen_interval=0: must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_resumed_gan_run_ends_bitwise_identical(wandb_home, tmp_path):
    """3 iterations, then the same workdir asked for 6, equals 6 straight (checkpoints at
    every image point carry the whole state: both networks, both Adam states, BN stats)."""

    def run(workdir, iterations):
        argv = [
            f"--workdir={workdir}",
            "--wandb_mode=disabled",
            f"--iterations={iterations}",
            "--gen_interval=3",
            "--batch_size=16",
            "--eval_samples=0",
            "--val_examples=0",
            "--progress=false",
        ]
        assert dcgan_experiment.main(argv) == 0
        return json.loads((workdir / "summary.json").read_text())

    straight = run(tmp_path / "straight", 6)
    run(tmp_path / "resumed", 3)
    resumed = run(tmp_path / "resumed", 6)
    assert resumed["state_sha256"] == straight["state_sha256"]
    assert resumed["train/generator_loss"] == straight["train/generator_loss"]


@pytest.mark.slow
def test_sigterm_stops_within_an_image_interval_with_a_checkpoint(tmp_path):

    root = Path(__file__).resolve().parents[1]
    workdir = tmp_path / "gan"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.dcgan",
            f"--workdir={workdir}",
            "--iterations=5000",
            "--gen_interval=1000",
            "--batch_size=16",
            "--eval_samples=0",
            "--val_examples=0",
            "--wandb_mode=disabled",
            "--progress=false",
        ],
        cwd=root,
        env={**env, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until training has started (the W&B-disabled run has created its images folder
    # and compiled: give it a moment), then send SIGTERM well before the first image point.
    deadline = time.monotonic() + 240
    while not (workdir / "images").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped_at = int(err.split("stopped at step ")[1].split()[0])
    assert 0 < stopped_at < 1000  # Not held until the first image point.
    assert Checkpoints(workdir, read_only=True).latest_step() == stopped_at


def test_a_wrong_feature_network_is_refused_before_training(
    wandb_home, tmp_path, capsys, feature_net
):
    """--feature_net is loaded before the first step: a wrong one costs no training and
    leaves neither a checkpoint nor a W&B run behind."""
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    workdir = tmp_path / "gan"
    argv = [
        "--dataset=mnist",  # The feature network was trained on Fashion-MNIST.
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={workdir}",
        "--wandb_mode=offline",
        "--iterations=4",
        "--eval_samples=20",
        "--eval_batch_size=16",
        "--batch_size=16",
        f"--feature_net={feature_net}",
        "--progress=false",
    ]
    assert dcgan_experiment.main(argv) == 2
    assert "not a feature network of 'mnist'" in capsys.readouterr().err
    assert not list(workdir.glob("checkpoints/*")) and not (workdir / "wandb").exists()
