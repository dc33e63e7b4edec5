"""Typed experiment configs and their `--field=value` command line.

One frozen dataclass per experiment. Every field can be overridden as `--field=value`, the
form `wandb agent` passes. Unknown fields, values of the wrong type and impossible values are
errors that name the field, raised before any data is read or any code is compiled.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any, Literal, TypeVar


class ConfigError(ValueError):
    """A bad command line or config value; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Fields every experiment shares: data, optimisation, W&B and where results go."""

    # Data.
    dataset: str = "fashion_mnist"
    data_dir: str = ""  # "" = tfds's default folder, then Debian's dataset-fashion-mnist.
    data_source: Literal["auto", "tfds", "idx"] = "auto"
    # Optimisation.
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    # Results. Running the same command with the same workdir resumes the run.
    workdir: str = ""  # "" = runs/<experiment>
    # Also checkpoint every this many steps, at the next dispatch end; 0 = only at the log
    # points (epoch ends; the DCGAN's image points), which are always checkpointed.
    checkpoint_interval: int = 0
    max_to_keep: int = 2  # Checkpoints kept; older ones are deleted.
    min_free_disk_mb: int = 200  # Refuse to start with less free space in the workdir.
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "genjax"
    wandb_entity: str = ""
    wandb_name: str = ""
    wandb_group: str = ""  # W&B's run group (a sweep puts its trials in one).
    # Seconds an online W&B start may take before the run falls back to offline logging.
    wandb_init_timeout: float = 20.0
    progress: bool = True

    def validate(self) -> None:
        """Raises ConfigError for impossible values; subclasses extend it."""
        _positive(self, "batch_size", "max_to_keep")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed={self.seed}: must be in [0, 2**32)")
        _non_negative(self, "checkpoint_interval", "min_free_disk_mb")
        if not self.wandb_init_timeout > 0:
            raise ConfigError(f"--wandb_init_timeout={self.wandb_init_timeout}: must be positive")
        if not self.learning_rate > 0:
            raise ConfigError(
                f"--learning_rate={self.learning_rate}: the learning rate must be positive"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EpochConfig(BaseConfig):
    """Experiments trained in epochs over the training split (the autoencoder, the VAE)."""

    epochs: int = 20
    # 0 = a full pass over the training split; a positive value caps the epoch (for smoke runs).
    steps_per_epoch: int = 0
    # Training steps fused into one device dispatch (lax.scan); the progress bar moves per chunk.
    steps_per_dispatch: int = 500
    eval_batch_size: int = 1000
    # Points of the native W&B scatter (a wandb.Table) each time it is logged: the first of the
    # latent-space plot's points, whose PNG shows them all. W&B builds and serializes a table
    # at ~60 us a point on the logging thread, which on a 2-core machine competes with
    # training: 10,000 points were ~0.7 s of every VAE epoch.
    scatter_table_points: int = 1000
    # Epochs between those native scatters (and the last epoch's, always); the PNG scatter
    # is logged every epoch. Each table is a W&B artifact, built and serialized on the
    # logging thread: about a quarter of the CPU of a VAE epoch's row. 1 = every epoch.
    scatter_table_interval: int = 5

    def validate(self) -> None:
        super().validate()
        _positive(
            self,
            "epochs",
            "steps_per_dispatch",
            "eval_batch_size",
            "scatter_table_points",
            "scatter_table_interval",
        )
        _non_negative(self, "steps_per_epoch")


def _positive(config: BaseConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ConfigError(f"--{name}={value}: must be at least 1")


def _at_least_two(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 2:
            raise ConfigError(f"--{name}={value}: must be at least 2")


def _check_sample_quality(config) -> None:
    """The fields of experiments that report eval/fid, eval/precision and eval/recall."""
    if config.eval_samples != 0 and config.eval_samples < MIN_EVAL_SAMPLES:
        raise ConfigError(
            f"--eval_samples={config.eval_samples}: use 0 (no FID, precision or recall) or at "
            f"least {MIN_EVAL_SAMPLES} (the covariance fit and the k-nearest-neighbour balls "
            "need several images; the literature uses 10000)"
        )


def _non_negative(config: BaseConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 0:
            raise ConfigError(f"--{name}={value}: must be 0 or more")


# The fewest images eval/fid, eval/precision and eval/recall are computed from.
MIN_EVAL_SAMPLES = 10

C = TypeVar("C")  # A config dataclass with a validate() method.


def _convert(name: str, text: str, annotation: Any) -> Any:
    """Converts one flag's text to the field's type, or raises ConfigError naming the field."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if text not in choices:
            raise ConfigError(f"--{name}={text}: must be one of {', '.join(map(str, choices))}")
        return text
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{name}={text}: expected true or false")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            # wandb agent writes integral floats such as 32.0 for int parameters.
            try:
                as_float = float(text)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"--{name}={text}: expected an integer") from None
    if annotation is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--{name}={text}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"--{name}={text}: expected a finite number")
        return value
    if annotation is str:
        return text
    raise ConfigError(f"--{name}: unsupported field type {annotation}")


def field_types(config_cls: type) -> dict[str, Any]:
    """The resolved type of every field of a config class."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def parse_flags(config_cls: type[C], argv: Sequence[str], **defaults: Any) -> C:
    """Builds a validated config from `--field=value` (or `--field value`) arguments.

    `defaults` are the experiment's own defaults where they differ from the dataclass's.
    """
    types_ = field_types(config_cls)
    values: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}: every setting is --field=value")
        name, sep, text = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name not in types_:
            raise ConfigError(
                f"unknown flag --{name}; the flags of this experiment are: "
                + " ".join(f"--{n}" for n in types_)
            )
        if not sep:
            if types_[name] is bool:
                text = "true"
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                i += 1
                text = args[i]
            else:
                raise ConfigError(f"--{name} needs a value: --{name}=VALUE")
        if name in values:
            raise ConfigError(f"--{name} is given twice")
        values[name] = _convert(name, text, types_[name])
        i += 1
    config = config_cls(**{**defaults, **values})
    config.validate()
    return config


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(EpochConfig):
    """The report's autoencoder: latent size is the knob the report sweeps (2, 10, 100)."""

    latent_dim: int = 2
    hidden_dim: int = 512
    # leaky_relu (slope 0.3) is what the report's author ran; relu is the article's listing.
    latent_activation: Literal["leaky_relu", "relu", "linear", "tanh", "sigmoid"] = "leaky_relu"
    leaky_slope: float = 0.3
    num_reconstructions: int = 32  # Fixed test images shown with their reconstructions.
    latent_points: int = 5000  # Test images encoded for the latent-space plot.

    def validate(self) -> None:
        super().validate()
        _positive(self, "latent_dim", "hidden_dim", "num_reconstructions")
        _at_least_two(self, "latent_points")


@dataclasses.dataclass(frozen=True)
class VAEConfig(EpochConfig):
    """The report's VAE, with a true-likelihood option and its likelihood bounds."""

    latent_dim: int = 2
    hidden_dim: int = 512
    # "mse": the report's 784 * MSE + KL. "bernoulli": BCE on logits, a negative ELBO in nats.
    likelihood: Literal["mse", "bernoulli"] = "mse"
    beta: float = 1.0  # Weight of the KL term.
    # Binarized pixels, as likelihood papers use: "dynamic" resamples every training batch
    # (the test split is binarized once), "fixed" binarizes both splits once.
    binarize: Literal["none", "dynamic", "fixed"] = "none"
    num_reconstructions: int = 32
    num_generated: int = 32
    latent_points: int = 10000  # Test images whose z_mean is plotted (10,000 = all).
    interpolation_pairs: int = 8
    interpolation_steps: int = 10
    # Importance-weighted bound on the test log-likelihood (Bernoulli likelihood only).
    iwae_samples: int = 1000
    iwae_chunk: int = 100  # Samples drawn at once; memory ~ iwae_batch * iwae_chunk decodes.
    iwae_batch: int = 100
    iwae_examples: int = 0  # Test images evaluated; 0 = the whole test split.
    # Generated and test images behind eval/fid, eval/precision, eval/recall at the end; 0 = off.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's workdir; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(
            self,
            "latent_dim",
            "hidden_dim",
            "num_reconstructions",
            "num_generated",
            "latent_points",
            "interpolation_steps",
            "iwae_samples",
            "iwae_chunk",
            "iwae_batch",
        )
        _non_negative(self, "interpolation_pairs", "iwae_examples")
        if self.beta < 0:
            raise ConfigError(f"--beta={self.beta}: must be 0 or more")
        _check_sample_quality(self)
        if self.iwae_samples % self.iwae_chunk:
            raise ConfigError(
                f"--iwae_samples={self.iwae_samples} must be a multiple of "
                f"--iwae_chunk={self.iwae_chunk}"
            )


@dataclasses.dataclass(frozen=True)
class DCGANConfig(BaseConfig):
    """The Keras-GAN DCGAN and its training scheme, with the report's W&B instrumentation."""

    learning_rate: float = 2e-4  # Adam, for both networks, as Keras-GAN.
    beta1: float = 0.5
    iterations: int = 4000  # As the report's script.
    latent_dim: int = 100
    gen_interval: int = 50  # Iterations between generated-image grids.
    log_interval: int = 1  # Iterations between logged metric rows (1 = every one, the report).
    # "random": each batch drawn at random as Keras-GAN; "epochs": shuffled epochs.
    sampling: Literal["random", "epochs"] = "random"
    # How iterations between image points run: "loop" = one jitted call each (XLA:CPU runs
    # convolutions inside lax.scan very slowly), "scan" = fused; "auto" = loop on CPU only.
    fuse: Literal["auto", "scan", "loop"] = "auto"
    # Iterations between eval/fid, eval/precision, eval/recall (also at the end), from
    # eval_samples generated and test images; eval_samples 0 = no evaluation.
    eval_interval: int = 1000
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's workdir; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(self, "iterations", "latent_dim", "gen_interval", "log_interval")
        _positive(self, "eval_interval")
        _check_sample_quality(self)
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"--beta1={self.beta1}: must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(EpochConfig):
    """The feature network of genjax's FID: a small CNN trained on the training split."""

    epochs: int = 5
    batch_size: int = 128
    latent_points: int = 2000  # Test images whose features are plotted (PCA), per epoch.

    def validate(self) -> None:
        super().validate()
        _at_least_two(self, "latent_points")
