"""The command line: every config field a flag (wandb agent's form and the spaced one), --help
listing them, and bad input as one line naming the field."""

import dataclasses
import os

import pytest

from genjax import cli
from genjax.config import (
    AutoencoderConfig,
    ClassifierConfig,
    ConfigError,
    DCGANConfig,
    VAEConfig,
)


def test_defaults_follow_the_report():
    config = cli.parse(AutoencoderConfig, [])
    assert (config.batch_size, config.learning_rate, config.latent_dim) == (32, 1e-3, 2)
    assert config.latent_activation == "leaky_relu" and config.leaky_slope == 0.3
    assert config.dataset == "fashion_mnist"
    assert cli.parse(DCGANConfig, []).learning_rate == 2e-4  # Keras-GAN's, per experiment.


def test_every_field_is_a_flag_in_wandb_agent_form():
    config = cli.parse(
        AutoencoderConfig,
        [
            "--latent_dim=10",
            "--learning_rate=0.01",
            "--batch_size=64.0",  # wandb agent writes some integers so.
            "--progress=false",
            "--latent_activation=relu",
            "--dataset",
            "mnist",
            "--wandb_mode=disabled",
            "--latent-points=100",
        ],
    )
    assert config.latent_dim == 10 and config.learning_rate == 0.01
    assert config.batch_size == 64 and config.progress is False
    assert config.latent_activation == "relu" and config.dataset == "mnist"
    assert config.latent_points == 100


@pytest.mark.parametrize(
    "config_cls", [AutoencoderConfig, VAEConfig, DCGANConfig, ClassifierConfig]
)
def test_help_lists_every_field_with_its_default_and_meaning(config_cls, capsys):
    with pytest.raises(SystemExit) as done:
        cli.parse(config_cls, ["--help"], prog="python -m experiments.x")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(config_cls):
        assert f"--{field.name} " in text, field.name
    assert "--latent_dim INT" in text or config_cls is ClassifierConfig
    assert "Every random number of the run derives from it. (default: 0)" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--latent_dims=3"], "Unrecognized options: --latent_dims=3 (did you mean --latent_dim?)"),
        (["--latent_dim=two"], "--latent_dim: expected an integer, not 'two'"),
        (["--batch_size=3.5"], "--batch_size: expected an integer, not '3.5'"),
        (["--learning_rate=fast"], "--learning_rate: expected a number, not 'fast'"),
        (["--latent_dim=0"], "--latent_dim=0: must be at least 1"),
        (["--learning_rate=-1e-3"], "the learning rate must be positive"),
        (["--wandb_mode=sometimes"], "invalid choice 'sometimes' for argument '--wandb_mode'"),
        (["--latent_activation=gelu"], "Expected one of ('leaky_relu', 'relu'"),
        (["--progress=maybe"], "--progress: expected true or false, not 'maybe'"),
        (["--epochs=1", "--epochs=2"], "--epochs is given twice"),
        (["latent_dim=3"], "every setting is --field=value"),
        (["--seed"], "Missing value for argument '--seed'"),
        (["--seed=-1"], "--seed=-1: must be in [0, 2**32)"),
        (["--learning_rate=nan"], "--learning_rate: expected a finite number, not 'nan'"),
        (["--leaky_slope=inf"], "--leaky_slope: expected a finite number, not 'inf'"),
        (["--latent_points=1"], "--latent_points=1: must be at least 2"),
        (["--scatter_table_interval=0"], "--scatter_table_interval=0: must be at least 1"),
    ],
)
def test_bad_flags_are_one_line_naming_the_field(argv, message):
    with pytest.raises(ConfigError) as excinfo:
        cli.parse(AutoencoderConfig, argv)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_an_entry_point_ends_on_its_last_line(tmp_path):
    """After the failure's one line, neither a late Ctrl-C nor a library's noise on the way
    out reaches the terminal (the process is only shutting down)."""
    import subprocess
    import sys

    program = """
import atexit, os, signal, sys, time
from genjax import cli

def late():  # As jax's or orbax's cleanup, interrupted or failing after main returned.
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    print("Traceback (most recent call last): a writer thread's error", file=sys.stderr)

atexit.register(late)
print("error: the one line", file=sys.stderr)
cli.exit_with(1)
"""
    env = {k: v for k, v in os.environ.items() if k != "GENJAX_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: the one line"], result.stderr
