"""Generate images from a finished (or interrupted) VAE run without retraining.

    python -m experiments.vae_sample --workdir=runs/vae --num=64 [--seed=0] [--out=FILE.png]

Loads the run's latest checkpoint, rebuilds the model from the config stored with it, decodes
`num` draws of z ~ N(0, I) and writes them as one PNG grid (default WORKDIR/samples.png).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import jax

from experiments import registry, vae
from genjax import cli, images
from genjax.config import ConfigError
from genjax.steps import vae as steps


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Images decoded from z ~ N(0, I) by a finished (or interrupted) VAE run."""

    workdir: str = ""  # The VAE run's folder.
    num: int = 64  # Images to generate.
    seed: int = 0  # Of the z ~ N(0, I) draws: the same seed gives the same images.
    out: str = ""  # The PNG written; "" = WORKDIR/samples.png.

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
    experiment, _, state = registry.restore(workdir)
    if experiment is not vae:
        raise ConfigError(f"--workdir={workdir} is not a VAE run")
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
    prog = "python -m experiments.vae_sample"
    return cli.main(lambda: sample(cli.parse(SampleConfig, argv, prog=prog)))


if __name__ == "__main__":
    cli.exit_with(main())
