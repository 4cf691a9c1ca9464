"""Where arrays live on a mesh of devices: meshes, layouts of the training state, batches.

Notebook 07 teaches it. A *mesh* names an array of devices (here one axis, ``"data"``); a
``NamedSharding(mesh, PartitionSpec(...))`` says, for each axis of an array, which mesh axis
it is split over (``None``: not split, every device holds all of it). This module builds the
two layouts of a :class:`vae_lib.training.TrainState` that the notebook compares:

* ``"replicated"`` (data parallelism): every device holds all parameters and Adam's moments;
* ``"fsdp"`` (fully sharded data parallelism): each large array is split along one of its
  axes, so each device holds 1/n of the parameters and of Adam's moments.

In both, a batch is split along its first axis (:func:`batch_sharding`). Placement works the
same in one process and in many (:func:`place`, :func:`shard_batch`): each process supplies
only the part of an array its own devices hold. How the step runs on these layouts is
:mod:`vae_lib.sharded_training`.

References:
    JAX documentation, "Distributed arrays and automatic parallelization" and "Introduction to
    parallel programming"; Rajbhandari et al. (2020), ZeRO: memory optimizations toward
    training trillion parameter models (the FSDP layout is its stage 3).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA",
    "LAYOUTS",
    "batch_sharding",
    "bytes_per_device",
    "collectives",
    "create_sharded",
    "fsdp_spec",
    "make_mesh",
    "place",
    "process_rows",
    "replicated",
    "shard_batch",
    "state_shardings",
]

#: The name of the mesh axis a batch is split over.
DATA = "data"
#: The layouts :func:`state_shardings` knows.
LAYOUTS = ("replicated", "fsdp")
#: The collective operations :func:`collectives` counts in compiled HLO text.
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def make_mesh(num_devices: int | None = None, axis: str = DATA) -> Mesh:
    """A one-axis mesh of the first ``num_devices`` devices (all of them by default).

    The axis type is ``Auto``: shardings are hints to the compiler (XLA's SPMD partitioner),
    which decides what runs where and inserts the communication. (``jax.make_mesh`` defaults
    to ``Explicit`` axes, where shardings are part of every array's type.)

    Args:
        num_devices: how many devices of ``jax.devices()`` (in all processes) to use.
        axis: the name of the mesh axis.

    Returns:
        A ``jax.sharding.Mesh`` of shape ``(num_devices,)``.

    Raises:
        ValueError: more devices asked for than there are; the message says how to get more.
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"make_mesh: asked for {num_devices} devices, but JAX sees {len(devices)}. On a CPU, "
            f'simulate more with jax.config.update("jax_num_cpu_devices", N) right after importing '
            f"jax, before any JAX operation runs."
        )
    return jax.make_mesh((n,), (axis,), axis_types=(AxisType.Auto,), devices=devices[:n])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (``PartitionSpec()``)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: str = DATA) -> NamedSharding:
    """The first axis (the examples of a batch) split over ``axis``; the others not split."""
    return NamedSharding(mesh, P(axis))


def fsdp_spec(shape: tuple[int, ...], num_shards: int, axis: str = DATA, min_size: int = 1024) -> P:
    """The FSDP split of one array: its largest axis that ``num_shards`` divides, over ``axis``.

    Arrays smaller than ``min_size`` elements, and arrays none of whose axes divides evenly,
    stay whole on every device (splitting a 20-element bias over 8 devices saves nothing).

    Returns:
        A ``PartitionSpec`` with ``axis`` at the chosen position, or ``PartitionSpec()``.
    """
    if int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for d in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[d] % num_shards == 0:
            return P(*[axis if i == d else None for i in range(len(shape))])
    return P()


def state_shardings(tree: Any, mesh: Mesh, layout: str = "replicated", axis: str = DATA) -> Any:
    """A sharding for every array of ``tree`` (a TrainState, parameters, ...) in ``layout``.

    Args:
        tree: any pytree of arrays; static fields (a TrainState's graph, optimizer and loss)
            are kept, so the result can be given to ``jax.jit(in_shardings=...)``.
        mesh: the mesh.
        layout: ``"replicated"`` (data parallel) or ``"fsdp"`` (:func:`fsdp_spec` per array).
        axis: the mesh axis that FSDP splits over.

    Returns:
        The same pytree structure with a ``NamedSharding`` in place of each array.

    Raises:
        ValueError: an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
    n = mesh.shape[axis]

    def one(leaf):
        if layout == "replicated" or np.ndim(leaf) == 0:
            return replicated(mesh)
        return NamedSharding(mesh, fsdp_spec(np.shape(leaf), n, axis))

    return jax.tree.map(one, tree)


def create_sharded(make: Callable[[], Any], mesh: Mesh, layout: str = "replicated", axis: str = DATA) -> Any:
    """Build a state with every array created on the devices ``layout`` assigns it, never whole.

    ``make()`` (for example ``lambda: create_train_state(VAE(rngs=nnx.Rngs(0)))``) is traced
    once for its shapes (``jax.eval_shape``, nothing computed), the layout is chosen from
    those shapes (:func:`state_shardings`), and ``make`` then runs compiled with those
    ``out_shardings``: each device computes only its own slices of the random initial weights
    and of Adam's zeros, so no device (and no host) ever holds a whole copy. In several
    processes each one computes the slices of its own devices.

    Returns:
        What ``make`` returns, each array laid out as ``layout`` says.
    """
    shardings = state_shardings(jax.eval_shape(make), mesh, layout, axis)
    return jax.jit(make, out_shardings=shardings)()


def place(tree: Any, shardings: Any) -> Any:
    """Put each array of ``tree`` on the devices its sharding names; works across processes.

    Every process passes the same full values (for example a model built from the same
    seed); each one copies only the pieces its own devices hold
    (``jax.make_array_from_callback``), so this works where ``jax.device_put`` of host data
    onto devices of other processes does not.

    Returns:
        ``tree`` with each array replaced by a ``jax.Array`` laid out as its sharding says.
    """

    def one(leaf, sharding):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def process_rows(sharding: NamedSharding, num_rows: int) -> slice:
    """The rows of a ``(num_rows, ...)`` array that this process's devices hold.

    With a batch split over all devices and each process owning consecutive devices of the
    mesh, that is one contiguous block of rows: this process's part of the global batch.

    Raises:
        ValueError: ``num_rows`` does not split evenly over the mesh, or this process's
            rows are not contiguous (a mesh whose devices are not ordered by process).
    """
    n = sharding.mesh.size
    if num_rows % n:
        raise ValueError(
            f"a batch of {num_rows} examples does not split evenly over {n} devices: "
            f"use a batch size that is a multiple of {n}."
        )
    starts = sorted(
        {index[0].indices(num_rows)[:2] for index in sharding.addressable_devices_indices_map((num_rows,)).values()}
    )
    lo, hi = starts[0][0], starts[-1][1]
    if sum(b - a for a, b in starts) != hi - lo:
        raise ValueError(f"this process's rows {starts} are not one block: order the mesh's devices by process.")
    return slice(lo, hi)


def shard_batch(local_rows: np.ndarray, sharding: NamedSharding, num_rows: int) -> jax.Array:
    """The global batch, built from the rows this process supplies (its :func:`process_rows`).

    In one process ``local_rows`` is the whole batch. In several, each process passes its own
    block and ``jax.make_array_from_process_local_data`` joins them into one array that spans
    every process's devices, without any process holding the others' rows.

    Raises:
        ValueError: ``local_rows`` is not this process's share of ``num_rows``.
    """
    rows = process_rows(sharding, num_rows)
    if len(local_rows) != rows.stop - rows.start:
        raise ValueError(
            f"this process supplies rows {rows.start}..{rows.stop - 1} of the global batch of "
            f"{num_rows} ({rows.stop - rows.start} rows), but got {len(local_rows)}."
        )
    return jax.make_array_from_process_local_data(sharding, np.asarray(local_rows), (num_rows, *local_rows.shape[1:]))


def bytes_per_device(tree: Any) -> dict[int, int]:
    """How many bytes of ``tree``'s arrays each device of this process holds, by device id."""
    held: Counter = Counter()
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device.id] += shard.data.nbytes
    return dict(sorted(held.items()))


def collectives(hlo_text: str) -> dict[str, int]:
    """How many of each cross-device operation a compiled program's HLO text contains.

    Args:
        hlo_text: ``jitted.lower(...).compile().as_text()``.

    Returns:
        ``{"all-reduce": 1, ...}`` for the collectives present (asynchronous pairs such as
        ``all-reduce-start``/``-done`` count once).
    """
    found = re.findall(r" (" + "|".join(_COLLECTIVES) + r")(?:-start)?\(", hlo_text)
    return dict(sorted(Counter(found).items()))
