"""The VAE's training step written several ways, from eager Python to one compiled epoch.

Notebook 04 teaches them in this order and benchmarks/train_throughput.py times them (one
change per row); all train the same model on the same batches with the same randomness, so
their losses agree (tests/test_step_variants.py). Every way draws step i's batch and z
with :func:`vae_lib.training.step_inputs` and the key ``jax.random.fold_in(key, i)``.

* :func:`nnx_step`: stateful NNX (``nnx.value_and_grad``, ``nnx.Optimizer``), run eagerly:
  every jnp operation is dispatched from Python one at a time.
* :data:`nnx_jit_step`: the same function under ``nnx.jit`` (graph mode, flax's default: each
  call walks the model and optimizer objects); :data:`nnx_jit_donate_step` also donates them.
  ``nnx.cached_partial(nnx_jit_donate_step, model, optimizer)`` caches that walk.
* :data:`nnx_jit_tree_step`: ``nnx.jit(..., graph=False)``, which treats the objects as plain
  pytrees; :data:`nnx_jit_tree_donate_step` also donates them.
* :func:`functional_step`: the same step on split state, a pure function of
  ``(params, opt_state)``; :data:`jax_jit_step` compiles it with ``jax.jit``, and
  :data:`jit_donate_step` also donates those buffers, so XLA updates them in place.
* :data:`device_data_step`: :func:`jit_donate_step` with the uint8 images on the device: each
  call gathers its own batch there (``images[order[i * B:(i + 1) * B]]``), so nothing but the
  step index crosses from the host; still one call per step.
* :func:`scan_steps`: the same steps in one program, repeated by ``jax.lax.scan``, each batch
  gathered inside its step.
* :func:`scan_epoch`: as :func:`scan_steps`, but all the epoch's batches gathered up front,
  before the scan, and the scan runs over them.

  The benchmark times these three as one row each (one change per row).
* :func:`guarded_epoch`: the library's loop (:func:`vae_lib.training.train_epoch_fused`) with
  its two choices switchable, to measure each: the next batch drawn during the current step
  or not (``prefetch``), and no guard against a non-finite loss or ``jnp.where`` over every
  parameter at every step (``guard``) instead of the library's rollback.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vae_lib.losses import vae_loss
from vae_lib.objectives import vae_elbo
from vae_lib.training import TrainState, apply_gradients, empty_metrics, record, step_batch, step_inputs

__all__ = [
    "functional_step",
    "guarded_epoch",
    "jax_jit_step",
    "device_data_step",
    "jit_donate_step",
    "nnx_jit_donate_step",
    "nnx_jit_step",
    "nnx_jit_tree_donate_step",
    "nnx_jit_tree_step",
    "nnx_step",
    "scan_epoch",
    "scan_steps",
]


def nnx_step(model: nnx.Module, optimizer: nnx.Optimizer, images, key: jax.Array, i) -> jax.Array:
    """Binarize batch i, take the negative ELBO's gradient, update the model in place."""
    x, z_key = step_inputs(images, jax.random.fold_in(key, i), True)

    def loss_fn(model):
        return -jnp.mean(vae_elbo(model, x, z_key)["elbo"])

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)  # Adam, in place on the model's parameters
    return loss


nnx_jit_step = nnx.jit(nnx_step)
nnx_jit_donate_step = nnx.jit(nnx_step, donate_argnames=("model", "optimizer"))
nnx_jit_tree_step = nnx.jit(nnx_step, graph=False)
nnx_jit_tree_donate_step = nnx.jit(nnx_step, graph=False, donate_argnames=("model", "optimizer"))


def functional_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, params, opt_state, images, key, i):
    """The same step as a pure function: returns ``(params, opt_state, loss)``, changes nothing."""
    x, z_key = step_inputs(images, jax.random.fold_in(key, i), True)
    (loss, _), grads = jax.value_and_grad(vae_loss, has_aux=True)(params, graphdef, x, z_key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


jax_jit_step = jax.jit(functional_step, static_argnums=(0, 1))
jit_donate_step = jax.jit(functional_step, static_argnums=(0, 1), donate_argnums=(2, 3))


def _gathered_step(graphdef, tx, params, opt_state, images, order, key, i, batch_size: int):
    """:func:`functional_step` on batch i, gathered from the images on the device."""
    idx = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
    return functional_step(graphdef, tx, params, opt_state, jnp.take(images, idx, axis=0), key, i)


#: One step per call, its batch gathered on the device: ``(graphdef, tx, params, opt_state,
#: images, order, key, i, batch_size)`` -> ``(params, opt_state, loss)``; params and
#: opt_state donated. The batch is ``images[order[i * B:(i + 1) * B]]``.
device_data_step = jax.jit(
    _gathered_step, static_argnums=(0, 1), static_argnames=("batch_size",), donate_argnums=(2, 3)
)


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("batch_size",), donate_argnums=(2, 3))
def scan_steps(graphdef, tx, params, opt_state, images, order, key, batch_size: int = 128):
    """Steps 0..n-1 in one ``lax.scan``, step i gathering ``images[order[i * B:(i + 1) * B]]`` itself.

    Returns ``(params, opt_state, losses)`` with one loss per step.
    """
    n_steps = order.shape[0] // batch_size

    def body(carry, i):
        params, opt_state = carry
        params, opt_state, loss = _gathered_step(graphdef, tx, params, opt_state, images, order, key, i, batch_size)
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), jnp.arange(n_steps))
    return params, opt_state, losses


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("batch_size",), donate_argnums=(2, 3))
def scan_epoch(graphdef, tx, params, opt_state, images, order, key, batch_size: int = 128):
    """Steps 0..n-1 in one program, step i on ``images[order[i * B:(i + 1) * B]]``, all gathered first.

    Returns ``(params, opt_state, losses)`` with one loss per step.
    """
    n_steps = order.shape[0] // batch_size
    batches = images[order[: n_steps * batch_size]].reshape(n_steps, batch_size, *images.shape[1:])

    def body(carry, inputs):
        params, opt_state = carry
        batch, i = inputs
        params, opt_state, loss = functional_step(graphdef, tx, params, opt_state, batch, key, i)
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (batches, jnp.arange(n_steps)))
    return params, opt_state, losses


@functools.partial(jax.jit, static_argnames=("batch_size", "prefetch", "guard"), donate_argnums=(0,))
def _guarded_steps(state: TrainState, images, order, key, *, batch_size: int, prefetch: bool, guard: str):
    n_steps = order.shape[0] // batch_size
    per_step = empty_metrics(state, images, batch_size, n_steps)

    def body(i, carry):
        state, per_step, healthy, x, z_key = carry
        if not prefetch:  # draw this step's batch now, not during the previous step
            x, z_key = step_batch(images, order, key, i, batch_size, state.binarize)
        next_x, next_z_key = (
            step_batch(images, order, key, i + 1, batch_size, state.binarize) if prefetch else (x, z_key)
        )
        new, metrics = apply_gradients(state, x, z_key)
        healthy = healthy & jnp.isfinite(metrics["loss"])
        if guard == "where":  # the new values while healthy, else the old ones, for every array

            def keep(new_tree, old_tree):
                return jax.tree.map(lambda a, b: jnp.where(healthy, a, b), new_tree, old_tree)

            new = new.replace(params=keep(new.params, state.params), opt_state=keep(new.opt_state, state.opt_state))
        return new, record(per_step, i, metrics), healthy, next_x, next_z_key

    first = step_batch(images, order, key, 0, batch_size, state.binarize)
    state, per_step, *_ = jax.lax.fori_loop(0, n_steps, body, (state, per_step, jnp.bool_(True), *first))
    return state, per_step


def guarded_epoch(
    state: TrainState, images, key: jax.Array, batch_size: int = 128, *, prefetch: bool = True, guard: str = "none"
) -> tuple[TrainState, dict]:
    """One epoch of :func:`vae_lib.training.train_epoch_fused`'s steps with its choices switched.

    Same batches and keys. ``prefetch=False`` draws each batch at the start of its own step;
    ``guard="where"`` keeps a non-finite update out of the state with ``jnp.where`` over every
    parameter and Adam moment at every step (the library's result, more memory traffic);
    ``guard="none"`` does not protect the state at all.

    Returns:
        ``(state, per_step)`` as :func:`vae_lib.training.train_epoch_fused` (metrics as arrays).
    """
    if guard not in ("where", "none"):
        raise ValueError(f'guard must be "where" or "none" (the rollback is train_epoch_fused); got {guard!r}.')
    k_perm, k_steps = jax.random.split(key)
    images = jnp.asarray(images)
    order = jax.random.permutation(k_perm, len(images))
    state, per_step = _guarded_steps(
        state, images, order, k_steps, batch_size=batch_size, prefetch=prefetch, guard=guard
    )
    return state, {name: jnp.asarray(v) for name, v in per_step.items()}
