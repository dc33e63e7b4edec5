"""Every experiment by name: what sweeps, evaluations and the benchmark look up.

Each is a module with the same parts: NAME, Config, IDENTITY, VECTOR_FIELDS, steps (its
genjax.steps module, which the benchmark times), load_data(config), create_state(config,
info, key), train(configs, early_stops), evaluate(config, state, dataset) and
comparison(config, state, dataset) (None where it is not swept); the generators also
sampler(config, state, dataset) and LIKELIHOOD, which experiments.leaderboard reads.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from experiments import (
    aae,
    autoencoder,
    cgan,
    classifier,
    cvae,
    dcgan,
    diffusion,
    flow_matching,
    vae,
    wgan_gp,
)
from genjax import data, run

MODULES = (autoencoder, vae, dcgan, classifier, cvae, aae, cgan, wgan_gp, diffusion, flow_matching)
EXPERIMENTS: dict[str, ModuleType] = {m.NAME: m for m in MODULES}


def restore(workdir: str | Path) -> tuple[ModuleType, Any, Any]:
    """(experiment, config, state) of a run folder's newest intact checkpoint, without
    training or data; safe beside a live trainer."""
    workdir = Path(workdir).resolve()  # Orbax reads absolute paths only.
    configs = {name: m.Config for name, m in EXPERIMENTS.items()}
    name, config, _ = run.read_finished(workdir, configs)
    experiment = EXPERIMENTS[name]
    template = experiment.create_state(config, data.dataset_info(config.dataset), jax.random.key(0))
    return experiment, config, run.restore_finished(workdir, template)
