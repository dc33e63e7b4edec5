"""The run layer's pieces: keys, which trials vectorize, the human ending, the GAN's segments."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from genjax import run
from genjax.config import AutoencoderConfig, ConfigError, DCGANConfig
from genjax.loops import epochs, iterations


def test_each_random_stream_is_a_function_of_the_seed_alone():
    a, b, other = run.keys(3), run.keys(3), run.keys(4)
    for name in ("init", "step", "data", "eval", "sample", "evaluation"):
        np.testing.assert_array_equal(
            jax.random.key_data(getattr(a, name)), jax.random.key_data(getattr(b, name))
        )
        assert not np.array_equal(
            jax.random.key_data(getattr(a, name)), jax.random.key_data(getattr(other, name))
        )
    assert not np.array_equal(jax.random.key_data(a.step), jax.random.key_data(a.data))


def test_only_settings_held_as_arrays_may_differ_between_vectorized_trials():
    ok = [AutoencoderConfig(seed=0, workdir="a"), AutoencoderConfig(seed=1, workdir="b")]
    run.check_vectorizable(ok, "autoencoder", ("seed", "learning_rate"))
    with pytest.raises(ConfigError, match="differ in hidden_dim, latent_dim"):
        run.check_vectorizable(
            [AutoencoderConfig(), AutoencoderConfig(latent_dim=3, hidden_dim=8)],
            "autoencoder",
            ("seed",),
        )


def test_a_run_ends_with_a_table_of_its_figures_and_where_everything_is():
    summary = {
        "train/loss": 0.0269,
        "val/loss": 0.0271611,
        "epoch": 20,
        "time/wall_s": 84.0,
        "time/logging_share": 0.03,
        "wandb_run": {"mode": "offline", "dir": "/w/wandb/r", "sync_command": "wandb sync /w/r"},
        "images": "/w/images",
        "checkpoints": "/w/checkpoints",
    }
    table = run.final_table("autoencoder", summary, Path("/w"))
    assert table.splitlines() == [
        "autoencoder done in 1.4 min:",
        "  train/loss  0.0269",
        "  val/loss    0.0271611",
        "W&B run       /w/wandb/r (offline)",
        "  upload:     wandb sync /w/r",
        "images        /w/images",
        "checkpoints   /w/checkpoints",
        "summary.json  /w/summary.json",
    ]


def test_an_epoch_is_the_full_batches_of_the_training_split_capped_for_smoke_runs():
    config = AutoencoderConfig(batch_size=32)
    assert epochs.steps_per_epoch(config, 60000) == 1875
    assert epochs.steps_per_epoch(AutoencoderConfig(steps_per_epoch=10), 60000) == 10
    with pytest.raises(ConfigError, match="larger than the training split"):
        epochs.steps_per_epoch(AutoencoderConfig(batch_size=64), 63)


def test_gan_segments_end_at_image_evaluation_and_checkpoint_points():
    config = DCGANConfig(iterations=10, gen_interval=4, eval_interval=5, checkpoint_interval=0)
    assert iterations.segments(config, 0) == [(0, 4), (4, 1), (5, 3), (8, 2)]
    assert iterations.segments(config, 5) == [(5, 3), (8, 2)]  # Resumed at a point.
    quiet = dataclasses.replace(config, val_examples=0, eval_samples=0)  # Nothing to evaluate.
    assert iterations.segments(quiet, 0) == [(0, 4), (4, 4), (8, 2)]


def test_a_validation_smaller_than_one_batch_is_refused():
    from genjax import data

    images = np.zeros((40, 28, 28, 1), np.uint8)
    split = data.Split(images, np.zeros(40, np.int32))
    dataset = data.Dataset(data.dataset_info("fashion_mnist"), split, split, "test")
    config = DCGANConfig(batch_size=8, val_examples=30, eval_batch_size=500)
    with pytest.raises(ConfigError, match="--val_examples=30 is less than one batch of 40"):
        iterations.total_steps(config, dataset)
    assert iterations.total_steps(dataclasses.replace(config, val_examples=40), dataset) > 0


def _tiny_autoencoder(tmp_path, **overrides):
    from experiments import autoencoder
    from tests.conftest import write_idx_dataset

    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    config = AutoencoderConfig(
        data_dir=str(small),
        data_source="idx",
        workdir=str(tmp_path / "run"),
        epochs=2,
        batch_size=16,
        eval_batch_size=20,
        latent_points=40,
        wandb_mode="disabled",
        progress=False,
        **overrides,
    )
    dataset = autoencoder.load_data(config)
    state = autoencoder.create_state(config, dataset.info, run.keys(config.seed).init)
    total = epochs.total_steps(config, dataset)
    return autoencoder, config, dataset, state, total


def test_prepare_runs_before_training_only_and_pictures_count_as_logging(tmp_path, capsys):
    """run.open's prepare runs once before a run trains and never for a finished one; the
    seconds spent drawing pictures are part of time/logging_share."""
    from genjax.steps import autoencoder as steps

    experiment, config, dataset, state, total = _tiny_autoencoder(tmp_path)
    prepared, nap = [], 0.4

    def pictures(config, state, epoch, outputs):
        time.sleep(nap)
        return {}

    def open_run():
        return run.open(
            experiment.NAME, [config], [state], experiment.IDENTITY, dataset, total,
            prepare=lambda: prepared.append(len(list(Path(config.workdir).glob("checkpoints/*")))),
        )  # fmt: skip

    with open_run() as runs:
        (summary,) = epochs.train(runs, dataset, steps, pictures=pictures)
    assert prepared == [0]  # Once, before the first checkpoint.
    assert summary["time/logging_share"] * summary["time/wall_s"] >= 2 * nap
    table = capsys.readouterr().out
    assert "autoencoder done in" in table and "\n  val/loss  " in table  # The final table.

    with open_run() as runs:
        (again,) = epochs.train(runs, dataset, steps, pictures=pictures)
    assert prepared == [0] and again == summary
    out = capsys.readouterr().out
    assert "is already complete at step 8" in out and table in out  # The same ending.


def test_a_failing_prepare_leaves_no_trace_but_the_lock(tmp_path):
    experiment, config, dataset, state, total = _tiny_autoencoder(tmp_path)

    def prepare():
        raise ConfigError("no feature network")

    with pytest.raises(ConfigError, match="no feature network"):
        with run.open(experiment.NAME, [config], [state], experiment.IDENTITY, dataset, total,
                      prepare=prepare):  # fmt: skip
            pytest.fail("the run must not start")
    workdir = Path(config.workdir)
    assert not list(workdir.glob("checkpoints/*")) and not list(workdir.glob("*.json"))
