"""Data parallelism over every device: the batch sharded on a `data` mesh axis, the rest
(parameters, optimizer state, the training split) replicated.

The same programs run on 1 or N devices and on several hosts: the steps only constrain
each batch to the `data` sharding, and XLA's SPMD partitioner inserts the gradient and
metric all-reduces, so a sharded step computes what one device would (to float
reassociation). With one device every function here is the identity. Several hosts:
`initialize()` calls `jax.distributed.initialize()` first, as big_vision does, and every
host loads the same data, so replicated arrays agree.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from genjax.config import ConfigError

AXIS = "data"

# Set by a multi-host launcher (or by hand) to make initialize() join the other processes;
# on Cloud TPU pods and SLURM jax.distributed.initialize() finds its peers by itself.
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


def initialize() -> None:
    """Joins the other hosts' processes, where this run is one of several."""
    if os.environ.get(COORDINATOR_ENV) or os.environ.get("SLURM_NTASKS", "1") != "1":
        jax.distributed.initialize()


@functools.cache
def mesh() -> Mesh:
    """All devices of all hosts on one `data` axis."""
    return Mesh(np.asarray(jax.devices()), (AXIS,))


def count() -> int:
    return jax.device_count()


def check_batch(batch_size: int, flag: str = "--batch_size") -> None:
    """A batch that does not divide over the devices is refused before anything runs."""
    devices = count()
    if batch_size % devices:
        lower = batch_size - batch_size % devices
        raise ConfigError(
            f"{flag}={batch_size} does not divide over the {devices} devices of the `data` "
            f"mesh axis; use a multiple of {devices} (e.g. {flag}={lower or devices})"
        )


def constrain_batch(tree: Any) -> Any:
    """Inside jit: shards the leading (batch) axis of every leaf over the devices."""
    if count() == 1:
        return tree
    spec = NamedSharding(mesh(), PartitionSpec(AXIS))
    return jax.lax.with_sharding_constraint(tree, spec)


def replicate(tree: Any) -> Any:
    """Puts every leaf on every device (parameters, optimizer state, the data split)."""
    if count() == 1:
        return tree
    return jax.device_put(tree, NamedSharding(mesh(), PartitionSpec()))


def describe() -> str:
    """'1 device (cpu)' or '4 devices (gpu), the batch sharded over `data`'."""
    n = count()
    where = f"{n} device{'s' if n > 1 else ''} ({jax.default_backend()})"
    return where if n == 1 else f"{where}, the batch sharded over the `{AXIS}` mesh axis"


def is_main_process() -> bool:
    """Only the first host logs to W&B and prints; every host checkpoints its shards."""
    return jax.process_index() == 0
