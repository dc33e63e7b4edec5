"""genjax's cases: an experiment's training step at a batch size, timed on the code path its
loop runs (fused dispatches of an epoch, or the iteration loop's segments), on the whole
training split held on the device."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks import flops
from benchmarks.floor import floor
from benchmarks.timing import peak_rss_mb, timed
from experiments import registry
from genjax import data, run
from genjax.config import EpochConfig
from genjax.loops import epochs, iterations
from genjax.steps import fused


def run_config(name: str, batch: int, bench):
    """The experiment's own config at this batch size and data, logging and evaluating
    nothing."""
    config_cls = registry.EXPERIMENTS[name].Config
    fields = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(
        batch_size=batch,
        dataset=bench.dataset,
        data_dir=bench.data_dir,
        data_source=bench.data_source,
        wandb_mode="disabled",
        progress=False,
        **({"eval_samples": 0} if "eval_samples" in fields else {}),
    )


def steps_per_dispatch(name: str, bench) -> int:
    """Steps per timed dispatch: --dispatch_steps, else the experiment's default (an epoch
    dispatch of 500 steps, a GAN segment of gen_interval iterations)."""
    if bench.dispatch_steps:
        return bench.dispatch_steps
    config = registry.EXPERIMENTS[name].Config()
    return config.steps_per_dispatch if isinstance(config, EpochConfig) else config.gen_interval


def case(name: str, batch: int, bench, xla_defaults: bool = False) -> dict:
    """One row: steps/s, images/s, compile seconds, peak memory, FLOPs (and --floor).
    xla_defaults: compile an iteration family's step with XLA's default options instead of
    its steps module's CPU_COMPILER_OPTIONS (iterations.compiler_options)."""
    experiment = registry.EXPERIMENTS[name]
    config = run_config(name, batch, bench)
    dataset = experiment.load_data(config)
    keys = run.keys(config.seed)
    steps = experiment.steps
    state = experiment.create_state(config, dataset.info, keys.init)
    split = data.to_device(dataset.train)
    length = steps_per_dispatch(name, bench)
    if isinstance(config, EpochConfig):
        length = min(length, epochs.steps_per_epoch(config, len(split)))
        dispatch, box = _epoch_dispatches(state, split, keys, steps, config, length)
        options = {}
    else:
        options = {} if xla_defaults else iterations.compiler_options(steps)
        dispatch, box = _segments(state, split, keys, steps, config, length, options)
    first, per_dispatch, calls = timed(dispatch, bench.seconds)
    # The images one step takes: an iteration may draw more or fewer than a batch (WGAN-GP's
    # n_critic batches, the CGAN's half batch).
    drawn = batch if isinstance(config, EpochConfig) else config.draw_size()
    example = {
        "image": jnp.zeros((drawn, *dataset.info.image_shape), jnp.float32),
        "label": jnp.zeros((drawn,), jnp.int32),
    }
    step = (box["state"], example, keys.step)
    step_flops = flops.count(steps.train_step, *step)
    steps_per_s = length / per_dispatch
    row = {
        "model": name,
        "batch_size": batch,
        "steps_per_s": steps_per_s,
        "images_per_s": steps_per_s * batch,
        "compile_s": max(first - per_dispatch, 0.0),
        "peak_host_mb": peak_rss_mb(),
        "gflop_per_step": step_flops / 1e9,
        "gflops": step_flops * steps_per_s / 1e9,
        "steps_per_dispatch": length,
        "timed_dispatches": calls,
        "xla_options": options,
    }
    if bench.floor:
        # A GAN's three Adam updates stay in its rest: small beside its convolutions.
        optimizer_state = box["state"] if hasattr(box["state"], "apply_gradients") else None
        products = flops.products(steps.train_step, *step)
        row["floor"] = floor(row, products, optimizer_state, bench.seconds)
    return row


def _epoch_dispatches(state, split, keys, steps, config, length):
    """As the epoch loop: one fused dispatch, then its metrics on the host; each epoch's
    order drawn once, before its dispatches."""
    per_epoch = epochs.steps_per_epoch(config, len(split))
    per_order = len(fused.chunks(per_epoch, length))  # Dispatches sharing an epoch order.
    box = {"state": state, "dispatches": 0}

    def dispatch():
        epoch, at = divmod(box["dispatches"], per_order)
        if at == 0:
            box["order"] = fused.epoch_order(keys.data, jnp.int32(epoch), n=len(split))
        box["state"], metrics = fused.train_steps(
            box["state"],
            split.images,
            split.labels,
            keys.step,
            box["order"],
            jnp.int32(0),
            train_step=steps.train_step,
            num_steps=length,
            batch_size=config.batch_size,
            pixel_range=steps.PIXEL_RANGE,
        )
        jax.device_get(metrics)
        box["dispatches"] += 1

    return dispatch, box


class _NoSignal:
    signum = None


def _segments(state, split, keys, steps, config, length, options):
    """As the iteration loop: one segment, then its metrics on the host."""
    segment = iterations.segment_runner(config, steps, split, keys, _NoSignal(), options)
    box = {"state": state}

    def dispatch():
        box["state"], metrics = segment(box["state"], length)
        jax.device_get(metrics)

    return dispatch, box
