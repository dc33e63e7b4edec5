"""The run layer's pieces: keys, which trials vectorize, the human ending, the GAN's segments."""

from __future__ import annotations

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
    assert "{" not in table  # No raw JSON on the terminal.


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
