"""Training on a mesh of devices with the library's own step: compiler-driven, and per device.

Notebook 07 teaches it, in this order:

1. :func:`sharded_step`: ``jax.jit`` of :func:`vae_lib.training.train_step` with the layouts
   of its inputs and outputs (:mod:`vae_lib.sharding`). The step is written for one device;
   XLA's SPMD partitioner splits it over the mesh and inserts the communication: for a batch
   split over the devices, one all-reduce of the gradients.
2. :func:`gather_weights`: FSDP's rule for computing with split weights: gather each one
   whole before it is used, so that only the weights (not the activations) travel.
3. :func:`batch_schedule` and :func:`fit_sharded`: a training loop over global batches whose
   examples and keys depend on the step number only, so any number of devices and processes
   trains exactly what one device trains (to float rounding).
4. :func:`per_device_step` and :func:`pmean_step`: the same step as each device runs it under
   ``jax.shard_map``, with the all-reduce written by hand (``jax.lax.pmean``).

Running it in several processes is :mod:`vae_lib.distributed`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from vae_lib import training
from vae_lib.data import check_images
from vae_lib.sharding import DATA, batch_sharding, place, process_rows, replicated, shard_batch, state_shardings
from vae_lib.training import TrainState

__all__ = [
    "batch_schedule",
    "fit_sharded",
    "gather_weights",
    "mean_gradients",
    "per_device_step",
    "pmean_step",
    "sharded_step",
]


def sharded_step(state_layout: TrainState, batch_layout: NamedSharding, donate: bool = True) -> Callable:
    """:func:`vae_lib.training.train_step`, compiled for a mesh: the same step, laid out.

    Args:
        state_layout: a sharding for every array of the state
            (:func:`vae_lib.sharding.state_shardings`); the new state comes out the same way.
        batch_layout: the batch's sharding (:func:`vae_lib.sharding.batch_sharding`).
        donate: donate the old state's buffers (as :data:`vae_lib.training.jit_train_step`).

    Returns:
        ``step(state, images, key) -> (state, metrics)``, with the metrics on every device.

    References:
        Xu et al. (2021), GSPMD: general and scalable parallelization for ML computation graphs.
    """
    everywhere = replicated(batch_layout.mesh)
    return jax.jit(
        training.train_step,
        in_shardings=(state_layout, batch_layout, everywhere),
        out_shardings=(state_layout, everywhere),
        donate_argnums=0 if donate else (),
    )


def gather_weights(state: TrainState, mesh: Mesh) -> TrainState:
    """The state with a loss that gathers every parameter whole before using it (FSDP).

    The parameters stay split where they are stored (and Adam's moments with them); inside
    the loss, ``jax.lax.with_sharding_constraint`` asks for each one replicated, so the
    compiler all-gathers each weight before its layer and, in the backward pass, reduces
    the gradient back to the split layout. Without it, the compiler may instead keep the
    weights in place and move the activations (cheaper for small batches; not FSDP).

    Returns:
        ``state`` with its ``loss_fn`` wrapped; call it once per state, not per step (a new
        loss function is a new static argument: the step compiles again).

    References:
        Rajbhandari et al. (2020), ZeRO; Zhao et al. (2023), PyTorch FSDP.
    """
    loss_fn, whole = state.loss_fn, replicated(mesh)

    def loss_with_gathered_weights(params, graphdef, x, key):
        return loss_fn(jax.lax.with_sharding_constraint(params, whole), graphdef, x, key)

    return state.replace(loss_fn=loss_with_gathered_weights)


def batch_schedule(key: jax.Array, num_examples: int, batch_size: int) -> Callable[[int], tuple[np.ndarray, jax.Array]]:
    """The examples and the key of global step ``i``, as a function of ``i`` alone.

    Step i is batch j = i mod E of epoch e = i // E (E = ``num_examples // batch_size`` full
    batches), drawn exactly as ``training.train_epoch(state, images, jax.random.fold_in(key,
    e), batch_size)`` draws its batch j and that batch's key. Nothing depends on the devices
    or processes, so every layout trains on the same batches with the same random numbers.

    Returns:
        ``schedule(i) -> (indices of the batch's examples, the step's key)``.

    Raises:
        ValueError: fewer examples than one batch.
    """
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"a schedule needs at least one full batch: {num_examples} examples < batch_size={batch_size}."
        )
    cache: dict[int, tuple[np.ndarray, jax.Array]] = {}

    def schedule(i: int) -> tuple[np.ndarray, jax.Array]:
        epoch, j = divmod(int(i), steps_per_epoch)
        if epoch not in cache:
            cache.clear()
            k_perm, k_steps = jax.random.split(jax.random.fold_in(key, epoch))
            cache[epoch] = (np.asarray(jax.random.permutation(k_perm, num_examples)), k_steps)
        order, k_steps = cache[epoch]
        return order[j * batch_size : (j + 1) * batch_size], jax.random.fold_in(k_steps, j)

    return schedule


def fit_sharded(
    state: TrainState,
    images: ArrayLike,
    *,
    mesh: Mesh,
    key: jax.Array,
    steps: int,
    batch_size: int = 128,
    layout: str = "replicated",
    log_every: int = 0,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, TrainState, float], None] | None = None,
) -> tuple[TrainState, np.ndarray]:
    """Train ``steps`` steps, each global batch split over every device of ``mesh``.

    Works unchanged in one process and in several (:mod:`vae_lib.distributed`): every
    process passes the same ``state`` and ``images`` and supplies only its own rows of each
    batch (:func:`vae_lib.sharding.shard_batch`). Batches and keys come from
    :func:`batch_schedule`, so the result is, to float rounding and whatever the mesh, that of
    :func:`vae_lib.training.train_epoch` on one device with the key ``fold_in(key, e)`` for
    epoch e.

    Args:
        state: a :class:`vae_lib.training.TrainState` (for example at step 0).
        images: the training images, uint8 (N, 28, 28) or float (N, 784) in [0, 1], the same
            in every process.
        mesh: the devices (:func:`vae_lib.sharding.make_mesh`).
        key: the training key.
        steps: how many steps.
        batch_size: the global batch; a multiple of the number of devices.
        layout: ``"replicated"`` (data parallel) or ``"fsdp"`` (parameters and Adam's state
            split, weights gathered per layer: :func:`gather_weights`).
        log_every: log the loss every this many steps (0: never); ``log`` prints it.
        on_step: called after every step as ``on_step(i, state, loss)`` (i from 1), for
            heartbeats or a snapshot; it waits for the step to finish.

    Returns:
        ``(state, losses)``: the state laid out on the mesh, and the loss of every step.

    Raises:
        ValueError: bad images, ``batch_size`` not a multiple of the number of devices, an
            unknown layout, or ``steps < 1``.
    """
    check_images(images, "fit_sharded")
    if steps < 1:
        raise ValueError(f"fit_sharded needs steps >= 1; got {steps}.")
    images = np.asarray(images)
    batches = batch_sharding(mesh)
    rows = process_rows(batches, batch_size)  # also checks that the batch splits evenly
    if layout == "fsdp":
        state = gather_weights(state, mesh)
    layout_of_state = state_shardings(state, mesh, layout)  # (checks the layout's name)
    state = place(state, layout_of_state)
    step = sharded_step(layout_of_state, batches)
    schedule = batch_schedule(key, len(images), batch_size)
    losses = []
    for i in range(steps):
        indices, step_key = schedule(i)
        batch = shard_batch(images[indices[rows]], batches, batch_size)
        state, metrics = step(state, batch, step_key)
        losses.append(metrics["loss"])
        if log_every and (i + 1) % log_every == 0:
            log(f"step {i + 1}/{steps}: loss {float(metrics['loss']):.3f}")
        if on_step is not None:
            on_step(i + 1, state, float(metrics["loss"]))
    return state, np.array([float(loss) for loss in losses])


def mean_gradients(tx: optax.GradientTransformation, axis: str) -> optax.GradientTransformation:
    """``tx`` applied to the gradients averaged over the devices of ``axis``: one pmean."""

    def update(grads, opt_state, params=None):
        return tx.update(jax.lax.pmean(grads, axis), opt_state, params)

    return optax.GradientTransformation(tx.init, update)


def per_device_step(state: TrainState, images: ArrayLike, key: jax.Array, axis: str = DATA) -> tuple[TrainState, dict]:
    """One training step as each device runs it: its own rows, its own noise, one pmean.

    Each device binarizes its rows and draws its z with the step's key folded with its own
    index along ``axis`` (the same key on every device would give every device the same
    noise), takes the gradient of the loss on its rows, and averages the gradients with the
    others (``jax.lax.pmean``) before the optimizer's update, which then runs identically
    on every device. It reuses :func:`vae_lib.training.apply_gradients`: the pmean sits at
    the optimizer's input.

    Runs under ``jax.shard_map`` with ``check_vma=False`` (:func:`pmean_step`), and under
    ``jax.vmap(..., axis_name=axis)`` on one device, which computes the same numbers.

    Returns:
        ``(new state, metrics averaged over the devices)``.
    """
    x, z_key = training.step_inputs(images, jax.random.fold_in(key, jax.lax.axis_index(axis)), state.binarize)
    new, metrics = training.apply_gradients(state.replace(tx=mean_gradients(state.tx, axis)), x, z_key)
    return new.replace(tx=state.tx), jax.lax.pmean(metrics, axis)


def pmean_step(mesh: Mesh, axis: str = DATA) -> Callable:
    """:func:`per_device_step` on every device of ``mesh``: the batch split, the state replicated.

    ``check_vma=False`` turns off shard_map's tracking of which values differ between
    devices. With it on (the default), ``jax.grad`` of a replicated parameter already sums
    the gradient over the devices (copying a value to every device transposes to a sum),
    and the pmean on top would leave n times the mean gradient.

    Returns:
        ``step(state, images, key) -> (state, metrics)``, compiled, the state donated.
    """
    local = functools.partial(per_device_step, axis=axis)
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P()), out_specs=(P(), P()), check_vma=False)
    return jax.jit(mapped, donate_argnums=0)
