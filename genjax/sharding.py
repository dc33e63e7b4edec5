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
import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from genjax.config import ConfigError

AXIS = "data"

# A launch by hand (or by a launcher jax does not detect) names the coordinator, the number
# of processes and this process's index; jax.distributed.initialize() reads only the first
# from the environment, so genjax reads the other two. On Cloud TPU pods and under SLURM
# (or Open MPI) jax finds all three by itself.
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def _cluster_detected() -> bool:
    return os.environ.get("SLURM_NTASKS", "1") != "1" or "OMPI_COMM_WORLD_SIZE" in os.environ


def initialize() -> None:
    """Joins the other hosts' processes, where this run is one of several.

    Checked before jax starts: a coordinator without the process count and index (outside a
    cluster jax detects) would otherwise fail inside jax with no word of the fix.
    """
    coordinator = os.environ.get(COORDINATOR_ENV)
    cluster = _cluster_detected()
    if not coordinator and not cluster:
        return
    if cluster:
        jax.distributed.initialize(coordinator_address=coordinator)
        return
    given = {k: os.environ.get(k) for k in (NUM_PROCESSES_ENV, PROCESS_ID_ENV)}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"{COORDINATOR_ENV}={coordinator} is set but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not: set {NUM_PROCESSES_ENV} to the number "
            f"of processes and {PROCESS_ID_ENV} to this one's index (0 to "
            f"{NUM_PROCESSES_ENV}-1), or unset {COORDINATOR_ENV} to run on this host alone"
        )
    try:
        num, index = int(given[NUM_PROCESSES_ENV]), int(given[PROCESS_ID_ENV])
    except ValueError:
        raise ConfigError(
            f"{NUM_PROCESSES_ENV}={given[NUM_PROCESSES_ENV]} and {PROCESS_ID_ENV}="
            f"{given[PROCESS_ID_ENV]} must be whole numbers"
        ) from None
    if not 0 <= index < num:
        raise ConfigError(
            f"{PROCESS_ID_ENV}={index} is not an index of {NUM_PROCESSES_ENV}={num} processes; "
            f"give each process one of 0 to {num - 1}"
        )
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=index)


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


def constrain_replicated(tree: Any) -> Any:
    """Inside jit: every leaf whole on every device (what each host may fetch)."""
    if count() == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh(), PartitionSpec()))


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


def from_first_process(value: Any) -> Any:
    """The first process's `value` (JSON-able) on every process; with one, `value` itself.

    For decisions read from disk or drawn at random (a sweep's state and id): every process
    must then plan the same collective work, and a file the first one is writing is no race.
    """
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(value).encode(), np.uint8)
    # The receivers' buffer must have the sender's shape: its length goes first.
    size = int(multihost_utils.broadcast_one_to_all(np.int32(raw.size)))
    buffer = raw if is_main_process() else np.zeros(size, np.uint8)
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))))


def is_main_process() -> bool:
    """Only the first host logs to W&B and prints; every host checkpoints its shards."""
    return jax.process_index() == 0
