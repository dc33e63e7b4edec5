"""Generate images from a finished (or interrupted) VAE run without retraining.

    python -m experiments.vae_sample --workdir=runs/vae --num=64 [--seed=0] [--out=FILE.png]

Loads the run's latest checkpoint, rebuilds the model from the config stored with it, decodes
`num` draws of z ~ N(0, I) and writes them as one PNG grid (default WORKDIR/samples.png).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path

import jax

from experiments.vae import build_model
from genjax import cli, images
from genjax.checkpoint import Checkpoints
from genjax.config import ConfigError, VAEConfig, parse_flags
from genjax.data import dataset_info
from genjax.steps import vae as steps


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    workdir: str = ""  # The VAE run's folder.
    num: int = 64
    seed: int = 0  # Of the z ~ N(0, I) draws: the same seed gives the same images.
    out: str = ""  # "" = WORKDIR/samples.png

    def validate(self) -> None:
        if not self.workdir:
            raise ConfigError("--workdir is required: the folder of a VAE run")
        if self.num < 1:
            raise ConfigError(f"--num={self.num}: must be at least 1")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed={self.seed}: must be in [0, 2**32)")
        if self.out and not self.out.lower().endswith(".png"):
            raise ConfigError(f"--out={self.out}: must name a .png file")


def sample(config: SampleConfig) -> Path:
    workdir = Path(config.workdir)
    if not (workdir / "checkpoints").is_dir():
        raise ConfigError(
            f"--workdir={workdir} holds no checkpoints/; train it with experiments.vae"
        )
    checkpoints = Checkpoints(workdir, read_only=True)  # A trainer may still be writing.
    try:
        record = checkpoints.newest_record()
        if record is None:
            raise ConfigError(f"--workdir={workdir} holds no complete checkpoint yet")
        if record.get("experiment") != "vae":
            raise ConfigError(f"--workdir={workdir} is not a VAE run")
        known = {f.name for f in dataclasses.fields(VAEConfig)}
        vae_config = VAEConfig(**{k: v for k, v in record["config"].items() if k in known})
        model = build_model(vae_config, dataset_info(vae_config.dataset).image_shape)
        init = functools.partial(
            steps.create_state, model, vae_config.learning_rate, vae_config.beta
        )
        restored = checkpoints.restore_latest(init(jax.random.key(0)))
        if restored is None:
            raise ConfigError(f"--workdir={workdir} holds no complete checkpoint yet")
        state = restored[0]
    finally:
        checkpoints.close()
    generated = jax.device_get(steps.generate(state, jax.random.key(config.seed), config.num))
    cols = math.ceil(math.sqrt(config.num))
    grid = images.grid(images.to_uint8(generated), math.ceil(config.num / cols), cols)
    out = Path(config.out) if config.out else workdir / "samples.png"
    try:
        images.save_png(grid, out)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--out={out}: cannot write a PNG there ({e})") from None
    print(f"{config.num} images from step {int(state.step)} of {workdir}: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: sample(parse_flags(SampleConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
