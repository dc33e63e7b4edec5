import pytest

from genjax.config import AutoencoderConfig, ConfigError, parse_flags


def test_defaults_follow_the_report():
    config = parse_flags(AutoencoderConfig, [])
    assert (config.batch_size, config.learning_rate, config.latent_dim) == (32, 1e-3, 2)
    assert config.latent_activation == "leaky_relu" and config.leaky_slope == 0.3
    assert config.dataset == "fashion_mnist"


def test_every_field_is_a_flag_in_wandb_agent_form():
    config = parse_flags(
        AutoencoderConfig,
        [
            "--latent_dim=10",
            "--learning_rate=0.01",
            "--batch_size=64.0",
            "--progress=false",
            "--latent_activation=relu",
            "--dataset",
            "mnist",
            "--wandb_mode=disabled",
        ],
    )
    assert config.latent_dim == 10 and config.learning_rate == 0.01
    assert config.batch_size == 64 and config.progress is False
    assert config.latent_activation == "relu" and config.dataset == "mnist"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--latent_dims=3"], "unknown flag --latent_dims"),
        (["--latent_dim=two"], "--latent_dim=two: expected an integer"),
        (["--learning_rate=fast"], "--learning_rate=fast: expected a number"),
        (["--latent_dim=0"], "--latent_dim=0: must be at least 1"),
        (["--learning_rate=-1e-3"], "the learning rate must be positive"),
        (["--wandb_mode=sometimes"], "must be one of auto, online, offline, disabled"),
        (["--latent_activation=gelu"], "must be one of leaky_relu"),
        (["--progress=maybe"], "expected true or false"),
        (["--epochs=1", "--epochs=2"], "given twice"),
        (["latent_dim=3"], "every setting is --field=value"),
        (["--seed"], "--seed needs a value"),
        (["--seed=-1"], "--seed=-1: must be in [0, 2**32)"),
        (["--learning_rate=nan"], "--learning_rate=nan: expected a finite number"),
        (["--leaky_slope=inf"], "--leaky_slope=inf: expected a finite number"),
        (["--latent_points=1"], "--latent_points=1: must be at least 2"),
    ],
)
def test_bad_flags_name_the_field(argv, message):
    with pytest.raises(ConfigError, match=None) as excinfo:
        parse_flags(AutoencoderConfig, argv)
    assert message in str(excinfo.value)


def test_a_native_scatter_interval_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"--scatter_table_interval=0: must be at least 1"):
        parse_flags(AutoencoderConfig, ["--scatter_table_interval=0"])
