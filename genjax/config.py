"""One typed config per experiment: frozen dataclasses whose fields are the command line.

Every field is a flag, `--field=value` or `--field value` (genjax.cli parses them; the
comment after each field is its --help line). `validate()` refuses impossible values with a
message naming the field, before any data is read or any code is compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal


class ConfigError(ValueError):
    """A bad command line or config value; the message names the field and the fix."""


# The fewest images eval/fid, eval/precision and eval/recall are computed from.
MIN_EVAL_SAMPLES = 10


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Fields every experiment shares: data, optimisation, W&B and where results go."""

    dataset: str = "fashion_mnist"  # fashion_mnist or mnist (28x28x1, 10 classes).
    data_dir: str = ""  # A tfds data folder or a folder of the four IDX files; "" = defaults.
    data_source: Literal["auto", "tfds", "idx"] = "auto"  # Where the data comes from.
    batch_size: int = 32  # Examples per training step.
    learning_rate: float = 1e-3  # Adam's learning rate.
    seed: int = 0  # Every random number of the run derives from it.
    workdir: str = ""  # The run's folder; the same again resumes it. "" = runs/<experiment>.
    # Also checkpoint every this many steps (at the next dispatch end); 0 = at log points only.
    checkpoint_interval: int = 0
    max_to_keep: int = 2  # Checkpoints kept; older ones are deleted.
    min_free_disk_mb: int = 200  # Refuse to start with less free space in the workdir.
    # W&B: auto = online with an API key, else offline; disabled logs nothing.
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "genjax"  # W&B project.
    wandb_entity: str = ""  # W&B entity (user or team); "" = the key's default.
    wandb_name: str = ""  # W&B run name; "" = W&B's.
    wandb_group: str = ""  # W&B run group (a sweep puts its trials in one).
    wandb_init_timeout: float = 20.0  # Seconds an online W&B start may take before offline.
    progress: bool = True  # A progress bar on the terminal.

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

    epochs: int = 20  # Passes over the training split.
    steps_per_epoch: int = 0  # 0 = a full pass; a positive value caps the epoch (smoke runs).
    steps_per_dispatch: int = 500  # Training steps fused into one device call (lax.scan).
    eval_batch_size: int = 1000  # Batch size of the test-split evaluation.
    # Points of the native W&B scatter (a wandb.Table, ~60 us a point to build on the
    # logging thread); the PNG scatter shows every point.
    scatter_table_points: int = 1000
    # Epochs between native W&B scatters (each a W&B artifact; also at the last epoch).
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


@dataclasses.dataclass(frozen=True)
class IterationConfig(BaseConfig):
    """Experiments trained in iterations with image points (the GANs)."""

    iterations: int = 4000  # Training iterations, as the report's script.
    gen_interval: int = 50  # Iterations between generated-image grids (and checkpoints).
    log_interval: int = 1  # Iterations between logged metric rows (1 = every one).
    # Batches: "random" = drawn at random with replacement (Keras-GAN); "epochs" = shuffled.
    sampling: Literal["random", "epochs"] = "random"
    # "loop" = one jitted call per iteration (XLA:CPU runs convolutions inside lax.scan
    # slowly), "scan" = fused; "auto" = loop on CPU only.
    fuse: Literal["auto", "scan", "loop"] = "auto"
    eval_interval: int = 1000  # Iterations between evaluation points (and at the end).
    # Test images the family's eval step scores at each evaluation point (val/*; whole
    # batches of eval_batch_size); 0 = none.
    val_examples: int = 2000
    eval_batch_size: int = 500  # Batch size of that evaluation.

    def validate(self) -> None:
        super().validate()
        _positive(
            self, "iterations", "gen_interval", "log_interval", "eval_interval", "eval_batch_size"
        )
        _non_negative(self, "val_examples")

    def draw_size(self) -> int:
        """Training images one iteration draws: a batch, unless the family's iteration takes
        several (WGAN-GP's critic updates) or fewer (a half batch of real images)."""
        return self.batch_size


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


def _non_negative(config: BaseConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 0:
            raise ConfigError(f"--{name}={value}: must be 0 or more")


def _check_sample_quality(config) -> None:
    """The fields of experiments that report eval/fid, eval/precision and eval/recall."""
    if config.eval_samples != 0 and config.eval_samples < MIN_EVAL_SAMPLES:
        raise ConfigError(
            f"--eval_samples={config.eval_samples}: use 0 (no FID, precision or recall) or at "
            f"least {MIN_EVAL_SAMPLES} (the covariance fit and the k-nearest-neighbour balls "
            "need several images; the literature uses 10000)"
        )


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(EpochConfig):
    """The report's autoencoder: latent size is the knob the report sweeps (2, 10, 100)."""

    latent_dim: int = 2  # Size of the latent code; the report sweeps 2, 10 and 100.
    hidden_dim: int = 512  # Width of both hidden layers.
    # Activation of the latent code: leaky_relu (slope 0.3) is what the report's author ran,
    # relu the article's listing.
    latent_activation: Literal["leaky_relu", "relu", "linear", "tanh", "sigmoid"] = "leaky_relu"
    leaky_slope: float = 0.3  # Slope of the LeakyReLU (Keras's default).
    num_reconstructions: int = 32  # Fixed test images shown with their reconstructions.
    latent_points: int = 5000  # Test images encoded for the latent-space plots.
    # Images decoded at the end from a Gaussian fitted to the training split's codes.
    num_generated: int = 32
    # Such images and as many test images behind eval/fid, eval/precision, eval/recall (the
    # VAE's N, so the two compare); 0 = none.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(self, "latent_dim", "hidden_dim", "num_reconstructions", "num_generated")
        _at_least_two(self, "latent_points")
        _check_sample_quality(self)


@dataclasses.dataclass(frozen=True)
class VAEConfig(EpochConfig):
    """The report's VAE, with a true-likelihood option and its likelihood bounds."""

    latent_dim: int = 2  # Size of the latent code.
    hidden_dim: int = 512  # Width of both hidden layers.
    # "mse": the report's 784 * MSE + KL; "bernoulli": BCE on logits, a negative ELBO in nats.
    likelihood: Literal["mse", "bernoulli"] = "mse"
    beta: float = 1.0  # Weight of the KL term.
    # Binarized pixels, as likelihood papers use: "dynamic" resamples every training batch
    # and binarizes the test split once, "fixed" binarizes both splits once.
    binarize: Literal["none", "dynamic", "fixed"] = "none"
    num_reconstructions: int = 32  # Fixed test images shown with their reconstructions.
    num_generated: int = 32  # Images decoded from the same z ~ N(0, I) every epoch.
    latent_points: int = 10000  # Test images whose z_mean is plotted (10,000 = all).
    interpolation_pairs: int = 8  # Rows of latent interpolations between test images.
    interpolation_steps: int = 10  # Images per interpolation row.
    iwae_samples: int = 1000  # Importance samples of the IWAE bound (Bernoulli, binarized).
    iwae_chunk: int = 100  # Samples drawn at once; memory ~ iwae_batch * iwae_chunk decodes.
    iwae_batch: int = 100  # Test images per IWAE batch.
    iwae_examples: int = 0  # Test images of the IWAE bound; 0 = the whole test split.
    # Generated and test images behind eval/fid, eval/precision, eval/recall; 0 = none.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.

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
class DCGANConfig(IterationConfig):
    """The Keras-GAN DCGAN and its training scheme, with the report's W&B instrumentation."""

    learning_rate: float = 2e-4  # Adam's, for both networks, as Keras-GAN.
    beta1: float = 0.5  # Adam's first-moment decay, for both networks, as Keras-GAN.
    latent_dim: int = 100  # Size of the generator's noise input.
    # Generated and test images behind eval/fid, eval/precision, eval/recall; 0 = none.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(self, "latent_dim")
        _check_sample_quality(self)
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"--beta1={self.beta1}: must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    """The report's VAE conditioned on the class: a one-hot label joins the encoder's input
    and the latent code (Kingma et al. 2014, M2-style conditioning)."""

    class_columns: int = 8  # Columns of generated_by_class: one fixed z per column.

    def validate(self) -> None:
        super().validate()
        _positive(self, "class_columns")


@dataclasses.dataclass(frozen=True)
class CGANConfig(IterationConfig):
    """Keras-GAN's conditional GAN (cgan.py): a label embedding multiplied into the noise and
    into the image, MLP generator and discriminator."""

    iterations: int = 10000  # Training iterations, as Keras-GAN's cgan.py.
    gen_interval: int = 200  # Iterations between image grids and checkpoints (save_interval).
    learning_rate: float = 2e-4  # Adam's, for both networks, as Keras-GAN.
    beta1: float = 0.5  # Adam's first-moment decay, for both networks, as Keras-GAN.
    latent_dim: int = 100  # Size of the generator's noise input.
    class_columns: int = 8  # Columns of generated_by_class: one fixed noise vector per column.
    # Generated and test images behind eval/fid, eval/precision, eval/recall and
    # eval/class_accuracy; 0 = none.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(self, "latent_dim", "class_columns")
        _check_sample_quality(self)
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"--beta1={self.beta1}: must be in [0, 1)")
        if self.batch_size < 2:
            raise ConfigError(
                f"--batch_size={self.batch_size}: must be at least 2 (the discriminator "
                "trains on half a batch of real and half a batch of generated images)"
            )

    def draw_size(self) -> int:
        return self.batch_size // 2  # Keras-GAN's half_batch of real images.


@dataclasses.dataclass(frozen=True)
class WGANGPConfig(IterationConfig):
    """Keras-GAN's WGAN-GP (wgan_gp.py): a critic without sigmoid, n_critic critic updates
    per generator update, a gradient penalty on random interpolates, RMSprop."""

    iterations: int = 30000  # Generator updates, as Keras-GAN's wgan_gp.py.
    gen_interval: int = 100  # Iterations between image grids and checkpoints (sample_interval).
    learning_rate: float = 5e-5  # RMSprop's, for both networks, as Keras-GAN.
    latent_dim: int = 100  # Size of the generator's noise input.
    n_critic: int = 5  # Critic updates per generator update, each on its own real batch.
    gp_weight: float = 10.0  # Weight of the gradient penalty (lambda of Gulrajani et al.).
    # Generated and test images behind eval/fid, eval/precision, eval/recall; 0 = none.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(self, "latent_dim", "n_critic")
        _check_sample_quality(self)
        if self.gp_weight < 0:
            raise ConfigError(f"--gp_weight={self.gp_weight}: must be 0 or more")

    def draw_size(self) -> int:
        return self.batch_size * self.n_critic  # One real batch per critic update.


@dataclasses.dataclass(frozen=True)
class AAEConfig(IterationConfig):
    """Keras-GAN's adversarial autoencoder (aae.py): a discriminator on the latent code pushes
    the codes toward the prior."""

    iterations: int = 20000  # Training iterations, as Keras-GAN's aae.py.
    gen_interval: int = 200  # Iterations between pictures and checkpoints (sample_interval).
    # No convolutions: fused (lax.scan) on every backend, measured faster than the loop on CPU.
    fuse: Literal["auto", "scan", "loop"] = "scan"
    learning_rate: float = 2e-4  # Adam's, for all three networks, as Keras-GAN.
    beta1: float = 0.5  # Adam's first-moment decay, as Keras-GAN.
    latent_dim: int = 10  # Size of the latent code (Keras-GAN: 10; 2 for the scatter).
    hidden_dim: int = 512  # Width of the encoder's and decoder's hidden layers.
    # The prior the codes are pushed toward: N(0, I), or a mixture of 10 Gaussians (the AAE
    # paper's figure).
    prior: Literal["gaussian", "mixture"] = "gaussian"
    # Weights of the reconstruction (MSE) and adversarial terms, as Keras-GAN's loss_weights.
    recon_weight: float = 0.999
    adversarial_weight: float = 0.001
    num_reconstructions: int = 32  # Fixed test images shown with their reconstructions.
    latent_points: int = 5000  # Test images encoded for the latent-space plots.
    # Points of the native W&B scatter (a wandb.Table); the PNG scatter shows every point.
    scatter_table_points: int = 1000
    # Native W&B scatters at the image points that are multiples of this many iterations
    # (each a W&B artifact), and at the end; the PNG at every image point.
    scatter_table_interval: int = 2000
    # Generated and test images behind eval/fid, eval/precision, eval/recall; 0 = none.
    eval_samples: int = 10000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.

    def validate(self) -> None:
        super().validate()
        _positive(
            self,
            "latent_dim",
            "hidden_dim",
            "num_reconstructions",
            "scatter_table_points",
            "scatter_table_interval",
        )
        _at_least_two(self, "latent_points")
        _check_sample_quality(self)
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"--beta1={self.beta1}: must be in [0, 1)")
        _non_negative(self, "recon_weight", "adversarial_weight")
        if self.prior == "mixture" and self.latent_dim < 2:
            raise ConfigError(
                f"--latent_dim={self.latent_dim}: the mixture prior's components lie on a "
                "circle, in at least 2 dimensions; use --latent_dim=2 or more"
            )


@dataclasses.dataclass(frozen=True)
class DenoisingConfig(IterationConfig):
    """What diffusion and flow matching share: the U-Net, its moving average, the sampler's
    step counts and the sample-quality figures."""

    # Sized for recognisable Fashion-MNIST samples in about 30 minutes on a 2-core CPU:
    # a U-Net's training costs ~3x its forward pass per image, so images/s, not iterations,
    # bound what a CPU run sees; the defaults spend them on several passes over the data.
    iterations: int = 3000  # Training iterations (Adam steps).
    batch_size: int = 64  # Images per iteration.
    # Above DDPM's 2e-4 (tuned for 800k steps): a few thousand steps need larger ones, and
    # the clipped gradients and the moving average keep them stable.
    learning_rate: float = 1e-3
    gen_interval: int = 250  # Iterations between sample grids, trajectories and checkpoints.
    eval_interval: int = 1500  # Iterations between evaluation points (and at the end).
    width: int = 32  # U-Net channels at 28x28 (twice as many at 14x14 and 7x7).
    attention: bool = True  # Self-attention at 7x7.
    # Most decay of the weights' moving average, which every sample uses (warmed up as
    # min(decay, (1 + n) / (10 + n)) after n steps). 0.995 averages ~200 steps: a short
    # run's weights improve fast enough that a longer average would lag behind them.
    ema_decay: float = 0.995
    # Generated and test images behind eval/fid, eval/precision, eval/recall; 0 = none.
    # Each sample costs a network call per sampler step: 1,000 keeps a CPU evaluation to
    # minutes (FID from fewer images is biased upward; compare runs at the same count).
    eval_samples: int = 1000
    feature_net: str = ""  # The FID feature network's folder; "" = runs/feature_nets/<dataset>.
    sample_steps: int = 50  # Sampler steps of the grids, trajectories and eval/fid.
    # At the end also eval/fid_SAMPLER_N (and precision, recall) for these samplers and step
    # counts, comma-separated: the speed/quality table (eval/fid's own sampler is not redone).
    final_samplers: str = ""
    final_sample_steps: str = ""  # Step counts of that table, comma-separated.

    SAMPLERS = ()  # The family's sampler names (not a flag).

    def validate(self) -> None:
        super().validate()
        _positive(self, "width", "sample_steps")
        _check_sample_quality(self)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema_decay={self.ema_decay}: must be in [0, 1)")
        self.final_steps()
        bad = sorted(set(self.final_sampler_list()) - set(self.SAMPLERS))
        if bad:
            raise ConfigError(
                f"--final_samplers={self.final_samplers}: {', '.join(bad)} unknown; "
                f"choose from {', '.join(self.SAMPLERS)}"
            )

    def final_sampler_list(self) -> list[str]:
        return [s for s in self.final_samplers.split(",") if s]

    def final_steps(self) -> list[int]:
        """--final_sample_steps as integers (ConfigError if it is not a list of them)."""
        try:
            steps = [int(s) for s in self.final_sample_steps.split(",") if s.strip()]
        except ValueError:
            steps = [0]
        if any(s < 1 for s in steps):
            raise ConfigError(
                f"--final_sample_steps={self.final_sample_steps}: must be step counts of at "
                "least 1, comma-separated (or empty: none)"
            )
        return steps


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(DenoisingConfig):
    """DDPM (Ho et al. 2020): epsilon prediction, linear or cosine noise schedule, ancestral
    or DDIM (Song et al. 2021) sampling."""

    SAMPLERS = ("ancestral", "ddim")

    timesteps: int = 1000  # Diffusion steps T of training, as Ho et al.
    schedule: Literal["linear", "cosine"] = "linear"  # Ho et al.'s, or Nichol & Dhariwal's.
    # The sampler of the grids, trajectories and eval/fid: DDIM is deterministic at eta 0 and
    # good in far fewer steps than T; ancestral is DDPM's, on the same respaced steps.
    sampler: Literal["ancestral", "ddim"] = "ddim"
    sample_steps: int = 50  # Sampler steps (network calls), evenly spaced over T.
    eta: float = 0.0  # DDIM's noise: 0 deterministic, 1 the ancestral sampler's.
    # At the end also eval/fid_SAMPLER_N (and precision, recall) for these samplers and step
    # counts, comma-separated: the speed/quality table (eval/fid's own sampler is not redone).
    final_samplers: str = "ddim"
    final_sample_steps: str = "10,50"  # Step counts of that table, comma-separated.

    def validate(self) -> None:
        super().validate()
        _at_least_two(self, "timesteps")
        for steps in (self.sample_steps, *self.final_steps()):
            if steps > self.timesteps:
                raise ConfigError(
                    f"{steps} sampler steps: more than the {self.timesteps} diffusion steps "
                    "(--timesteps); use at most that many (--sample_steps, --final_sample_steps)"
                )
        if self.eta < 0:
            raise ConfigError(f"--eta={self.eta}: must be 0 or more")


@dataclasses.dataclass(frozen=True)
class FlowMatchingConfig(DenoisingConfig):
    """Conditional flow matching with straight paths (Lipman et al. 2023; rectified flow, Liu
    et al. 2023): velocity prediction, Euler or Heun sampling."""

    SAMPLERS = ("euler", "heun")

    # The sampler of the grids, trajectories and eval/fid: Heun (two network calls a step)
    # is second order, so straight-ish learned paths need few steps.
    sampler: Literal["euler", "heun"] = "heun"
    sample_steps: int = 20  # Sampler steps from noise (t = 0) to image (t = 1).
    # At the end also eval/fid_SAMPLER_N (and precision, recall) for these samplers and step
    # counts, comma-separated: the speed/quality table (eval/fid's own sampler is not redone).
    final_samplers: str = "euler,heun"
    final_sample_steps: str = "10,20"  # Step counts of that table, comma-separated.


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(EpochConfig):
    """The feature network of genjax's FID: a small CNN trained on the training split."""

    epochs: int = 5  # Passes over the training split.
    batch_size: int = 128  # Examples per training step.
    latent_points: int = 2000  # Test images whose features are plotted (PCA), per epoch.
    # The network's folder, where the evaluations look for it; "" = runs/feature_nets/<dataset>.
    workdir: str = ""

    def validate(self) -> None:
        super().validate()
        _at_least_two(self, "latent_points")
