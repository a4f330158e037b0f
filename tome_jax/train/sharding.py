"""Device mesh and shardings: data parallel over "data", optional parameter sharding over "model".

The same code runs on one CPU, several local devices and many hosts: arrays are global
`jax.Array`s laid out by NamedShardings, and XLA inserts the collectives.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def make_mesh(model_axis: int = 1) -> Mesh:
    """All devices as a (data, model) mesh; model_axis > 1 shards large parameters (FSDP-like)."""
    count = jax.device_count()
    if model_axis < 1 or count % model_axis:
        raise ValueError(f"mesh.model={model_axis} must divide the device count {count}.")
    # Auto axes: XLA propagates shardings from the inputs (GSPMD), the model code stays unannotated.
    return jax.make_mesh((count // model_axis, model_axis), ("data", "model"),
                         axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over "data"; replicated over "model"."""
    return NamedSharding(mesh, P("data"))


def param_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Replicated, or split along the largest axis that the "model" axis divides."""
    size = mesh.shape["model"]
    if size > 1:
        for axis in np.argsort(shape)[::-1]:
            if shape[axis] % size == 0 and shape[axis] >= size:
                spec = [None] * len(shape)
                spec[axis] = "model"
                return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())


def state_shardings(mesh: Mesh, abstract_state):
    """A tree of shardings matching `abstract_state` (shapes from jax.eval_shape)."""
    return jax.tree.map(lambda a: param_sharding(mesh, a.shape), abstract_state)


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This host's part of the batch -> global arrays split over all hosts' devices."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
