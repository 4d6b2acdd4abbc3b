"""Devices: a 1-D mesh over all devices (of every process) with a "data" axis;
batches are sharded along it and parameters replicated (data parallelism
through GSPMD).

Several processes (hosts) run the same program on one global mesh, JAX's own
multi-controller model (`jax.distributed`): every process computes the same
decisions from the same files and data; process 0 alone writes files
(`writes_files`), orbax checkpoints are written and read by all, and
`barrier` keeps a process from reading what process 0 has not written yet.
"""
from __future__ import annotations

import inspect

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lth_jax.errors import check


def initialize_distributed(enabled: bool, coordinator: str = "", num_processes: int = 0, process_id: int = -1,
                           heartbeat_timeout: int = 100) -> bool:
    """Join a multi-process run; True when this process is part of one.

    enabled alone: `jax.distributed.initialize()` finds the coordinator, the
    process count and this process's id in the environment (Cloud TPU VMs,
    SLURM, Open MPI). `coordinator` ("host:port"), `num_processes` and
    `process_id` give them explicitly (the local several-process demo).
    CPU processes talk through gloo; GPU and TPU use their own collectives.
    A process that stops sending heartbeats for `heartbeat_timeout` seconds
    (killed, preempted) makes the others abort, so a run never hangs.
    Call before anything else uses JAX; a second call does nothing."""
    if _distributed_client() is not None:
        return True
    if not (enabled or coordinator):
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if coordinator:
        check(num_processes >= 1 and 0 <= process_id < num_processes,
              f"a coordinator address needs the process count and this process's id (0 .. count - 1); got "
              f"num_processes={num_processes}, process_id={process_id}")
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    if "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
        kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout)
    jax.distributed.initialize(**kwargs)
    return True


def _distributed_client():
    from jax._src import distributed  # the public API has no "is initialized" query that spares the backend
    return distributed.global_state.client


def process_index() -> int:
    """This process's index (0 without a multi-process run), without starting a backend."""
    if _distributed_client() is None:
        return 0
    return jax.process_index()


def writes_files() -> bool:
    """Process 0 writes a run's files; the others compute the same and write nothing."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches `name` (nothing without a multi-process run)."""
    if _distributed_client() is not None and jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _spread(x) -> bool:
    """An array whose shards live on several processes, none holding all of it."""
    return isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated


def replicated(tree):
    """`tree` with every array that several processes share out (members split
    over the devices of all hosts) copied whole onto every device, so that any
    process can read it; other leaves unchanged."""
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, NamedSharding(x.sharding.mesh, P())) if _spread(x) else x, tree)


def host(x):
    """A device array as numpy on every process, gathered across processes when
    its shards live on several."""
    if _spread(x):
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.array(devices), ("data",))


class DataParallel:
    """Shardings for one mesh: `replicated` for parameters and the resident
    training set, `batch` for a batch (leading axis split over "data")."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.size = mesh.shape["data"]
        self.replicated = NamedSharding(mesh, P())
        self.batch = NamedSharding(mesh, P("data"))

    def check_batch(self, batch_size: int, what: str = "batch_size") -> None:
        check(batch_size % self.size == 0,
              f"{what} {batch_size} must be a multiple of the number of devices ({self.size}) for "
              f"data parallelism; choose a multiple, or set parallel.data_parallel=False")

    def put(self, tree):
        return jax.device_put(tree, self.replicated)

    def put_members(self, tree):
        """A stacked ensemble: the leading member axis split over the devices when
        it divides by their number (each device holds whole members), else
        replicated. With several processes the stack is replicated here, so that
        every process can read any member; `Trainer.run` splits it over the
        devices of all processes while it trains (`members_split`)."""
        k = jax.tree_util.tree_leaves(tree)[0].shape[0]
        split = k % self.size == 0 and jax.process_count() == 1
        return jax.device_put(tree, self.batch if split else self.replicated)

    def members_split(self, tree):
        """The stack with its members split over the devices of all processes (each
        process holds its devices' members), or unchanged when they do not divide."""
        k = jax.tree_util.tree_leaves(tree)[0].shape[0]
        return jax.device_put(tree, self.batch) if k % self.size == 0 else tree

    def batches(self, index: np.ndarray, *arrays):
        """Global arrays of `array[index]` for each array, index (steps, batch)
        or (steps, members, batch): each process gathers only the examples of
        its own devices' shards (the batch axis is split over the devices;
        per-member batches over the members when they divide by the devices)."""
        shared = index.ndim == 2
        spec = P(None, "data") if shared or index.shape[1] % self.size == 0 else P(None, None, "data")
        sharding = NamedSharding(self.mesh, spec)

        def one(array):
            def shard(where):
                return array[index[where[:index.ndim]]][(slice(None),) * index.ndim + where[index.ndim:]]
            return jax.make_array_from_callback(index.shape + array.shape[1:], sharding, shard)
        return tuple(one(a) for a in arrays)
