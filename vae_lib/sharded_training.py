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
   ``jax.shard_map``, with the mean over the devices written by hand (``jax.lax.pmean`` of the
   loss); :func:`blockwise_step` computes the same numbers on one device.
5. :func:`fsdp_step`: FSDP written per device: each weight gathered by hand
   (``jax.lax.all_gather``), its gradient reduce-scattered by differentiation, and optionally
   gathered again in the backward pass instead of kept (``remat``).
6. :func:`accumulated_gradients`: gradient accumulation, the mean gradient of k micro-batches
   taken one after another.

Running it in several processes is :mod:`vae_lib.distributed`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from vae_lib import training
from vae_lib.data import check_images
from vae_lib.sharding import DATA, batch_sharding, place, process_rows, replicated, shard_batch, state_shardings
from vae_lib.training import TrainState

__all__ = [
    "accumulated_gradients",
    "batch_schedule",
    "blockwise_loss",
    "blockwise_step",
    "fit_sharded",
    "fsdp_step",
    "gather_weights",
    "mean_loss",
    "micro_batches",
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


def mean_loss(loss_fn: training.LossFn, axis: str) -> training.LossFn:
    """``loss_fn`` averaged over the devices of ``axis`` (``jax.lax.pmean`` of the loss and metrics).

    Under ``jax.shard_map`` with its default variance tracking (``check_vma=True``), the gradient
    of this mean with respect to a parameter every device holds whole is the mean of the
    devices' gradients, and the same on every device: differentiation inserts the one
    all-reduce. With the tracking off it is not: each device gets the gradient of its own rows.
    """

    def loss(params, graphdef, x, key):
        return jax.lax.pmean(loss_fn(params, graphdef, x, key), axis)

    return loss


def per_device_step(state: TrainState, images: ArrayLike, key: jax.Array, axis: str = DATA) -> tuple[TrainState, dict]:
    """One training step as each device runs it: its own rows, its own noise, the loss averaged.

    Each device binarizes its rows and draws its z with the step's key folded with its own
    index along ``axis`` (the same key on every device would give every device the same
    noise), and differentiates the loss averaged over the devices (:func:`mean_loss`), so
    its gradient is the mean gradient; the optimizer's update then runs identically on
    every device. It reuses :func:`vae_lib.training.apply_gradients`.

    Runs under ``jax.shard_map`` with variance tracking on (:func:`pmean_step`);
    :func:`blockwise_step` computes the same numbers on one device.

    Returns:
        ``(new state, metrics averaged over the devices)``.
    """
    x, z_key = training.step_inputs(images, jax.random.fold_in(key, jax.lax.axis_index(axis)), state.binarize)
    new, metrics = training.apply_gradients(state.replace(loss_fn=mean_loss(state.loss_fn, axis)), x, z_key)
    return new.replace(loss_fn=state.loss_fn), metrics


def pmean_step(mesh: Mesh, axis: str = DATA, check_vma: bool = True) -> Callable:
    """:func:`per_device_step` on every device of ``mesh``: the batch split, the state replicated.

    ``jax.shard_map`` keeps its default ``check_vma=True``: it tracks which values vary
    between devices, so that differentiating the averaged loss gives every device the mean
    gradient, and it refuses to return as replicated (``out_specs=P()``) a value that varies.
    ``check_vma=False`` is the trap notebook 07's exercise measures: each device then gets
    the gradient of its own rows only, the copies of the parameters part, and nothing checks
    that what is returned as replicated is the same everywhere (device 0's copy comes out).

    Returns:
        ``step(state, images, key) -> (state, metrics)``, compiled, the state donated.
    """
    local = functools.partial(per_device_step, axis=axis)
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P()), out_specs=(P(), P()), check_vma=check_vma)
    return jax.jit(mapped, donate_argnums=0)


def micro_batches(images: ArrayLike, key: jax.Array, num: int, binarize: bool = True) -> tuple[jax.Array, jax.Array]:
    """The batch as ``num`` blocks of consecutive rows, block j prepared with ``fold_in(key, j)``.

    Block j is what device j of :func:`per_device_step` prepares from its rows.

    Returns:
        ``(x, z_keys)``: x of shape ``(num, rows // num, 784)``, and each block's key for z.

    Raises:
        ValueError: the rows do not split into ``num`` equal blocks.
    """
    images = jnp.asarray(images)
    if num < 1 or images.shape[0] % num:
        raise ValueError(f"a batch of {images.shape[0]} rows does not split into {num} equal blocks.")
    blocks = images.reshape(num, images.shape[0] // num, *images.shape[1:])
    prepare = jax.vmap(lambda rows, j: training.step_inputs(rows, jax.random.fold_in(key, j), binarize))
    return prepare(blocks, jnp.arange(num))


def blockwise_loss(loss_fn: training.LossFn) -> training.LossFn:
    """``loss_fn`` on each block of :func:`micro_batches`, averaged over the blocks, on one device."""

    def loss(params, graphdef, xs, z_keys):
        per_block = jax.vmap(loss_fn, in_axes=(None, None, 0, 0))(params, graphdef, xs, z_keys)
        return jax.tree.map(lambda v: jnp.mean(v, axis=0), per_block)

    return loss


def blockwise_step(state: TrainState, images: ArrayLike, key: jax.Array, num_blocks: int) -> tuple[TrainState, dict]:
    """On one device, the step :func:`pmean_step` takes on ``num_blocks`` devices (to float rounding).

    The batch split into ``num_blocks`` blocks (:func:`micro_batches`), the loss averaged over
    them (:func:`blockwise_loss`), one optimizer update.
    """
    xs, z_keys = micro_batches(images, key, num_blocks, state.binarize)
    new, metrics = training.apply_gradients(state.replace(loss_fn=blockwise_loss(state.loss_fn)), xs, z_keys)
    return new.replace(loss_fn=state.loss_fn), metrics


def accumulated_gradients(state: TrainState, images: ArrayLike, key: jax.Array, num_micro: int) -> tuple[object, dict]:
    """Gradient accumulation: the mean gradient of ``num_micro`` micro-batches, one after another.

    Each micro-batch's gradient is computed and added to a running sum (``jax.lax.scan``), so
    only one micro-batch's activations exist at a time; the mean equals the gradient of
    :func:`blockwise_loss` on the whole batch (to float rounding), the gradient
    :func:`blockwise_step` and :func:`pmean_step` apply.

    Returns:
        ``(gradients, metrics averaged over the micro-batches)``.
    """
    xs, z_keys = micro_batches(images, key, num_micro, state.binarize)
    grad = jax.grad(state.loss_fn, has_aux=True)

    def add(total, block):
        g, metrics = grad(state.params, state.graphdef, *block)
        return jax.tree.map(jnp.add, total, g), metrics

    total, metrics = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, state.params), (xs, z_keys))
    return jax.tree.map(lambda g: g / num_micro, total), jax.tree.map(lambda v: jnp.mean(v, axis=0), metrics)


def fsdp_step(state_layout: TrainState, batch_layout: NamedSharding, remat: bool = False) -> Callable:
    """FSDP written per device: gather each split weight by hand, reduce-scatter its gradient.

    Each device holds its slice of every array that ``state_layout`` splits. In the loss it
    gathers each such parameter whole (``jax.lax.all_gather``, tiled along the split axis),
    then computes the averaged loss on its rows (:func:`mean_loss`). Differentiating an
    all-gather gives a reduce-scatter (``jax.lax.psum_scatter``): each device receives the
    sum of its slice of the gradient only, so the optimizer updates slices. Parameters that
    are whole on every device get their gradient by one all-reduce, as in :func:`pmean_step`.

    Args:
        state_layout: the state's shardings (:func:`vae_lib.sharding.state_shardings`, ``"fsdp"``).
        batch_layout: the batch's sharding; its mesh axis is the one FSDP splits over.
        remat: wrap the loss in ``jax.checkpoint`` saving only matmul outputs, so that the
            backward pass gathers the weights again instead of keeping them from the forward
            pass. (The CPU compiler merges the two gathers again; GPU and TPU compilers keep
            them apart.)

    Returns:
        ``step(state, images, key) -> (state, metrics)``, compiled, the state donated; the same
        numbers as :func:`blockwise_step` on one device, to float rounding.
    """
    axis, mesh = batch_layout.spec[0], batch_layout.mesh
    specs = jax.tree.map(lambda s: s.spec, (state_layout.params, state_layout.opt_state, state_layout.step))

    def gather(p, spec):
        if axis not in tuple(spec):
            return p
        return jax.lax.all_gather(p, axis, axis=tuple(spec).index(axis), tiled=True)

    def step(state, images, key):
        averaged = mean_loss(state.loss_fn, axis)

        def loss(shards, graphdef, x, z_key):
            return averaged(jax.tree.map(gather, shards, specs[0]), graphdef, x, z_key)

        if remat:
            loss = jax.checkpoint(loss, policy=jax.checkpoint_policies.dots_saveable, static_argnums=(1,))

        def local(arrays, images, key):  # the arrays of the state: this device's slices
            here = state.replace(params=arrays[0], opt_state=arrays[1], step=arrays[2], loss_fn=loss)
            x, z_key = training.step_inputs(images, jax.random.fold_in(key, jax.lax.axis_index(axis)), state.binarize)
            new, metrics = training.apply_gradients(here, x, z_key)
            return (new.params, new.opt_state, new.step), metrics

        mapped = jax.shard_map(local, mesh=mesh, in_specs=(specs, batch_layout.spec, P()), out_specs=(specs, P()))
        (params, opt_state, count), metrics = mapped((state.params, state.opt_state, state.step), images, key)
        return state.replace(params=params, opt_state=opt_state, step=count), metrics

    return jax.jit(step, donate_argnums=0)
