"""Devices: a 1-D mesh over the local devices with a "data" axis; batches are
sharded along it and parameters replicated (data parallelism through GSPMD)."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lth_jax.errors import check


def initialize_distributed(enabled: bool) -> None:
    """Multi-host start-up (TPU pods, multi-node GPU). The coordinator address,
    process count and id come from the environment (TPU VMs, SLURM, ...)."""
    if enabled:
        jax.distributed.initialize()


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
        it divides by their number (each device holds whole members), else replicated."""
        k = jax.tree_util.tree_leaves(tree)[0].shape[0]
        return jax.device_put(tree, self.batch if k % self.size == 0 else self.replicated)
