"""The host loop every experiment shares: fused steps -> evaluate -> log -> summary.json.

A model family brings its state, its jitted steps, its pixel range and what it draws at
each epoch's end; this loop owns the order of work, the progress bar and the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genjax import data, images
from genjax.config import BaseConfig, ConfigError
from genjax.steps import fused
from genjax.wandb_logging import Run

# Epoch-end pictures: {"images": {key: array}, "scatters": {key: images.Scatter}}.
MediaFn = Callable[[Any, int], Mapping[str, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Family:
    """What a model family plugs into the loop (all static: hashable jitted functions)."""

    name: str
    train_step: Callable
    eval_step: Callable
    pixel_range: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """Named random streams, each a pure function of the run seed."""

    init: jax.Array
    step: jax.Array  # Folded with state.step inside every train step.
    data: jax.Array  # Folded with the epoch number for the shuffle.
    eval: jax.Array  # Fixed, so validation numbers are comparable across epochs.
    sample: jax.Array  # For pictures (generation), fixed across epochs.


def run_keys(seed: int) -> RunKeys:
    root = jax.random.key(seed)
    return RunKeys(*(jax.random.fold_in(root, i) for i in range(5)))


def workdir_for(config: BaseConfig, experiment: str) -> Path:
    return Path(config.workdir or os.path.join("runs", experiment)).resolve()


def steps_per_epoch(config: BaseConfig, num_train: int) -> int:
    """Full batches per pass over the training split (the remainder is dropped: static shapes)."""
    if config.batch_size > num_train:
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the training split "
            f"({num_train} examples); use a smaller batch"
        )
    full = num_train // config.batch_size
    return min(full, config.steps_per_epoch) if config.steps_per_epoch else full


def _mean_metrics(chunks: list[Mapping[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get(
        {k: jnp.concatenate([jnp.atleast_1d(c[k]) for c in chunks]) for k in chunks[0]}
    )
    return {k: float(np.mean(v)) for k, v in stacked.items()}


def train(
    config: BaseConfig,
    family: Family,
    state: Any,
    dataset: data.Dataset,
    keys: RunKeys,
    run: Run,
    workdir: Path,
    media: MediaFn,
) -> dict[str, Any]:
    """Trains for config.epochs, logging one W&B step per epoch; returns the summary."""
    train_split = data.to_device(dataset.train)
    test_split = data.to_device(dataset.test)
    per_epoch = steps_per_epoch(config, len(train_split))
    image_dir = workdir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    bar = tqdm(
        total=config.epochs * per_epoch,
        unit="step",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        for epoch in range(config.epochs):
            bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
            chunk_metrics = []
            for start, length in fused.chunks(per_epoch, config.steps_per_dispatch):
                state, m = fused.train_steps(
                    state,
                    train_split.images,
                    train_split.labels,
                    keys.step,
                    keys.data,
                    jnp.int32(epoch),
                    jnp.int32(start),
                    train_step=family.train_step,
                    num_steps=length,
                    batch_size=config.batch_size,
                    pixel_range=family.pixel_range,
                )
                chunk_metrics.append(m)
                bar.update(length)
            train_metrics = _mean_metrics(chunk_metrics)
            val_metrics = jax.device_get(
                fused.evaluate(
                    state,
                    test_split.images,
                    test_split.labels,
                    keys.eval,
                    eval_step=family.eval_step,
                    batch_size=min(config.eval_batch_size, len(test_split)),
                    pixel_range=family.pixel_range,
                )
            )
            metrics = {f"train/{k}": v for k, v in train_metrics.items()}
            metrics |= {f"val/{k}": float(v) for k, v in val_metrics.items()}
            metrics |= {"epoch": epoch + 1, "step": int(jax.device_get(state.step))}
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if "/" in k})
            pictures = media(state, epoch + 1)
            for key, array in pictures.get("images", {}).items():
                array = array[0] if isinstance(array, tuple) else array
                images.save_png(array, image_dir / f"{key}.png")
            run.log(
                epoch + 1,
                metrics,
                images=pictures.get("images"),
                scatters=pictures.get("scatters"),
            )
    summary = {
        **metrics,
        "config": config.to_dict(),
        "wandb_run": run.describe(),
        "data_source": dataset.source,
        "images": str(image_dir),
    }
    run.summary({k: v for k, v in metrics.items()})
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def final_message(summary: Mapping[str, Any], workdir: Path) -> str:
    """Tells the user where everything is."""
    wb = summary["wandb_run"]
    lines = [f"done: {json.dumps({k: v for k, v in summary.items() if '/' in k})}"]
    if wb["mode"] == "disabled":
        lines.append("W&B run:      disabled")
    else:
        lines.append(f"W&B run:      {wb.get('url') or wb['dir']} ({wb['mode']})")
        if "sync_command" in wb:
            lines.append(f"  upload it:  {wb['sync_command']}")
        lines.append(f"  its media:  {Path(wb['dir']) / 'files' / 'media'}")
    lines.append(f"images:       {summary['images']}")
    lines.append(f"summary.json: {workdir / 'summary.json'}")
    return "\n".join(lines)
