"""Training with Optax: the plain step and epoch loop, the fast epoch beside them, and `fit`.

Read it in order (notebook 04 teaches it):

1. :class:`TrainState`: what a step changes (parameters, Adam's state, a step counter) and
   the static parts it needs (the model's graph, the optimizer, the loss).
2. :func:`train_step`: one step as a pure function, ``state, metrics = train_step(state,
   images, key)``. It is plain Python; ``jax.jit`` compiles it (:data:`jit_train_step`,
   with the state's buffers donated so XLA updates them in place).
3. :func:`train_epoch`: the plain epoch loop, one compiled step per batch, called from Python.
4. :func:`train_epoch_fused`: the same steps, same batches and same keys inside one
   compiled loop, with the images on the device, the next batch drawn while the current
   step runs, and a guard against a non-finite loss. It gives the numbers of
   :func:`train_epoch` (tests/test_training_speed_paths.py holds them equal), faster.
5. :func:`fit`: epochs of :func:`train_epoch_fused`, a progress bar, evaluation on test
   images, and a clear error when the loss stops being finite.

Losses live in :mod:`vae_lib.losses`, evaluation in :mod:`vae_lib.evaluation`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.typing import ArrayLike

from vae_lib.data import batch_indices, check_images, prepare_batch
from vae_lib.evaluation import evaluate
from vae_lib.losses import vae_loss

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "create_train_state",
    "fit",
    "jit_train_step",
    "train_epoch",
    "train_epoch_fused",
    "train_step",
]

LossFn = Callable[..., tuple[jax.Array, dict]]
PerStep = dict[str, np.ndarray]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the model keeps the last good parameters."""

    def __init__(self, step: int, history: dict | None = None):
        self.step = step
        self.history = history
        super().__init__(
            f"The training loss became non-finite at step {step} (counting from 1). That "
            f"update was not applied: the model holds the parameters from step {step - 1}. "
            f"Lower the learning rate, check the data for NaN/inf, or clip gradients "
            f"(optax.clip_by_global_norm)."
        )


class TrainState(struct.PyTreeNode):
    """Everything a training step changes (pytree leaves), plus the static parts it needs."""

    params: Any  # nnx.State of the model's parameters
    opt_state: Any  # the optimizer's state (Adam: two moments per parameter, a count)
    step: jax.Array  # steps taken so far (int32)
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss_fn: LossFn = struct.field(pytree_node=False)
    binarize: bool = struct.field(pytree_node=False, default=True)


def create_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    binarize: bool = True,
    loss_fn: LossFn = vae_loss,
) -> TrainState:
    """Split an NNX model into its graph and parameters, and set up the optimizer.

    Args:
        model: a :class:`vae_lib.models.VAE` or :class:`vae_lib.models.Autoencoder`.
        tx: the optimizer; ``optax.adam(learning_rate)`` when None.
        learning_rate: Adam's step size when ``tx`` is None.
        binarize: True trains on dynamically binarized pixels (a true Bernoulli
            likelihood); False on grey pixels (binary cross-entropy, not a normalised
            likelihood).
        loss_fn: ``loss_fn(params, graphdef, x, key) -> (loss, metrics)``, one of
            :mod:`vae_lib.losses`.

    Returns:
        A :class:`TrainState` at step 0.
    """
    tx = tx if tx is not None else optax.adam(learning_rate)
    graphdef, params = nnx.split(model)
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        graphdef=graphdef,
        tx=tx,
        loss_fn=loss_fn,
        binarize=binarize,
    )


# ------------------------------------------------------------------ the plain step
def step_inputs(images: ArrayLike, key: jax.Array, binarize: bool) -> tuple[jax.Array, jax.Array]:
    """What a step draws before it touches the model: the (binarized) batch and z's key."""
    k_bin, k_z = jax.random.split(key)
    return prepare_batch(images, k_bin, binarize), k_z


def apply_gradients(state: TrainState, x: jax.Array, z_key: jax.Array) -> tuple[TrainState, dict]:
    """The loss's gradient at the prepared batch ``x`` and one optimizer update."""
    grads, metrics = jax.grad(state.loss_fn, has_aux=True)(state.params, state.graphdef, x, z_key)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def train_step(state: TrainState, images: ArrayLike, key: jax.Array) -> tuple[TrainState, dict]:
    """One optimizer step on a batch, as a pure Python function (not compiled).

    Args:
        state: the :class:`TrainState`.
        images: uint8 (B, 28, 28) or float (B, 784) in [0, 1].
        key: split in two: one half binarizes the batch, the other draws z.

    Returns:
        ``(new state, metrics)``, the metrics of the state's loss on this batch (the loss
        before the update). Called directly it runs eagerly, one operation at a time; use
        :data:`jit_train_step` (``jax.jit`` of this function) to train.
    """
    return apply_gradients(state, *step_inputs(images, key, state.binarize))


#: :func:`train_step` compiled by ``jax.jit``; argument 0 (the state) is donated, so XLA
#: writes the new parameters into the old ones' memory. Do not use a state after passing it.
jit_train_step = jax.jit(train_step, donate_argnums=0)


def _stack(per_step: list[dict]) -> PerStep:
    return {name: np.asarray(jnp.stack([m[name] for m in per_step])) for name in per_step[0]}


def _check_epoch(num_images: int, batch_size: int) -> int:
    n_steps = num_images // batch_size
    if n_steps == 0:
        raise ValueError(
            f"an epoch needs at least one full batch: {num_images} images is fewer than batch_size={batch_size}."
        )
    return n_steps


def train_epoch(
    state: TrainState, images: ArrayLike, key: jax.Array, batch_size: int = 128
) -> tuple[TrainState, PerStep]:
    """One pass over ``images`` in a seeded shuffled order, one compiled step per batch.

    The order is ``jax.random.permutation`` of the first half of ``jax.random.split(key)``
    (:func:`vae_lib.data.batch_indices`; the last partial batch is dropped); batch i is
    trained with the key ``jax.random.fold_in(second half, i)``.

    Returns:
        ``(state, per_step)``: ``per_step[name]`` is a float32 array with one value of each
        metric per step, in order.
    """
    _check_epoch(len(images), batch_size)
    k_perm, k_steps = jax.random.split(key)
    per_step = []
    for i, idx in enumerate(batch_indices(k_perm, len(images), batch_size)):
        state, metrics = jit_train_step(state, images[idx], jax.random.fold_in(k_steps, i))
        per_step.append(metrics)
    return state, _stack(per_step)


# ------------------------------------------------------------------ the fast path
@functools.partial(jax.jit, static_argnames=("batch_size", "prefetch", "guard"), donate_argnums=(0, 1))
def _fused_steps(
    state: TrainState, per_step, images, order, key, start, stop, *, batch_size: int, prefetch: bool, guard: str
):
    """Steps start..stop-1 of an epoch in one compiled loop; per_step[name][i] is filled in.

    `start` and `stop` are traced, so any split of the epoch into chunks (for a progress
    bar) reuses one compilation. `prefetch` and `guard` are the switches of
    :func:`train_epoch_fused`. Returns ``(state, per_step, healthy)``; with
    ``guard="rollback"`` the loop ends after the first step whose loss is not finite
    (``healthy`` False), and that step's update *has* been applied: the caller rolls back.
    """
    last = order.shape[0] // batch_size - 1

    def inputs(i):  # the batch and keys of step i, as train_epoch draws them
        idx = jax.lax.dynamic_slice_in_dim(order, jnp.minimum(i, last) * batch_size, batch_size)
        return step_inputs(jnp.take(images, idx, axis=0), jax.random.fold_in(key, i), state.binarize)

    def body(i, carry):
        state, per_step, healthy, x, z_key = carry
        if prefetch:
            # Software pipelining: draw step i+1's batch while step i runs. The two are
            # independent, so XLA may overlap the random-number work with the matrix products.
            next_x, next_z_key = inputs(i + 1)  # (past the last step: unused)
        else:
            x, z_key = inputs(i)
            next_x, next_z_key = x, z_key
        new, metrics = apply_gradients(state, x, z_key)
        healthy = healthy & jnp.isfinite(metrics["loss"])
        if guard == "where":  # an update with a non-finite loss is not applied, nor any after it

            def keep(new_tree, old_tree):  # the new values while healthy, else the old ones
                return jax.tree.map(lambda a, b: jnp.where(healthy, a, b), new_tree, old_tree)

            new = new.replace(params=keep(new.params, state.params), opt_state=keep(new.opt_state, state.opt_state))
        per_step = {name: per_step[name].at[i].set(metrics[name]) for name in per_step}
        return new, per_step, healthy, next_x, next_z_key

    carry = (state, per_step, jnp.bool_(True), *inputs(start))
    if guard == "rollback":  # stop after the first non-finite loss (a scalar test per step)

        def cond(i_carry):
            i, carry = i_carry
            return (i < stop) & carry[2]

        _, (state, per_step, healthy, _, _) = jax.lax.while_loop(
            cond, lambda i_carry: (i_carry[0] + 1, body(*i_carry)), (start, carry)
        )
    else:
        state, per_step, healthy, _, _ = jax.lax.fori_loop(start, stop, body, carry)
    return state, per_step, healthy


def _empty_metrics(state: TrainState, images: jax.Array, batch_size: int, n_steps: int) -> dict:
    """Zeros for every metric of every step: the names come from tracing the loss once."""
    x = jax.ShapeDtypeStruct((batch_size, int(np.prod(images.shape[1:]))), jnp.float32)
    _, metrics = jax.eval_shape(state.loss_fn, state.params, state.graphdef, x, jax.random.key(0))
    return {name: jnp.zeros((n_steps, *m.shape), m.dtype) for name, m in metrics.items()}


def train_epoch_fused(
    state: TrainState,
    images: ArrayLike,
    key: jax.Array,
    batch_size: int = 128,
    progress=None,
    chunks: int = 20,
    *,
    prefetch: bool = True,
    guard: str = "rollback",
) -> tuple[TrainState, PerStep]:
    """:func:`train_epoch`'s steps inside one compiled loop: same batches, keys and results.

    The images go to the device once, each batch is gathered and binarized there, and the
    host only launches the loop (in ``chunks`` pieces when a ``progress`` bar, anything
    with an ``update(n)`` method, is given). When a step's loss is not finite, the
    returned state is the one from before that step; that step's metrics are recorded
    (NaN or inf), so the caller finds it in ``per_step["loss"]``, and later steps are not
    run (their metrics are NaN).

    Args:
        prefetch, guard: switches for measuring what each part costs
            (benchmarks/train_throughput.py); keep the defaults to train. ``prefetch=False``
            draws each batch at the start of its own step instead of during the previous
            one (the same numbers). ``guard`` says how a non-finite loss is kept out of the
            state: ``"rollback"`` (the default) copies the state before each chunk of
            steps, stops the loop after a non-finite loss and, only then, runs the chunk's
            good steps again from the copy; ``"where"`` selects old or new values with
            ``jnp.where`` for every parameter at every step (the same result, more memory
            traffic); ``"none"`` does not protect the state at all.

    Returns:
        ``(state, per_step)`` as :func:`train_epoch`.
    """
    n_steps = _check_epoch(len(images), batch_size)
    k_perm, k_steps = jax.random.split(key)
    images = jnp.asarray(images)
    order = jax.random.permutation(k_perm, len(images))
    per_step = _empty_metrics(state, images, batch_size, n_steps)
    n_chunks = 1 if progress is None else max(1, min(chunks, n_steps))
    bounds = [round(j * n_steps / n_chunks) for j in range(n_chunks + 1)]
    if guard not in ("rollback", "where", "none"):
        raise ValueError(f'guard must be "rollback", "where" or "none"; got {guard!r}.')
    run = functools.partial(
        _fused_steps, images=images, order=order, key=k_steps, batch_size=batch_size, prefetch=prefetch, guard=guard
    )
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        saved = jax.tree.map(jnp.copy, state) if guard == "rollback" else None
        state, per_step, healthy = run(state, per_step, start=start, stop=stop)
        if not bool(healthy):
            bad = start + int(np.flatnonzero(~np.isfinite(np.asarray(per_step["loss"][start:stop])))[0])
            if guard == "rollback":  # run the good steps of this chunk again, from the copy
                state, per_step, _ = run(saved, per_step, start=start, stop=bad)
            per_step = {name: v.at[bad + 1 :].set(jnp.nan) for name, v in per_step.items()}
            break
        if progress is not None:
            jax.block_until_ready(state.step)  # let the bar follow the computation
            progress.update(stop - start)
    return state, {name: np.asarray(v) for name, v in per_step.items()}


# ------------------------------------------------------------------ fit
def fit(
    model: nnx.Module,
    train_images: ArrayLike,
    *,
    key: jax.Array,
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    tx: optax.GradientTransformation | None = None,
    test_images: ArrayLike | None = None,
    binarize: bool = True,
    progress: bool = True,
    loss_fn: LossFn = vae_loss,
) -> dict[str, list]:
    """Train ``model`` in place and return its history (per-epoch means, nats per image).

    Epoch e trains with :func:`train_epoch_fused` and the key ``fold_in(k_train, e)``,
    where ``k_train, k_test = jax.random.split(key)``; with ``test_images`` the model is
    then evaluated (:func:`vae_lib.evaluation.evaluate`, key ``k_test``).

    Args:
        model: an NNX model; ``loss_fn`` says how it is trained (default: a VAE's
            negative ELBO; :func:`vae_lib.losses.autoencoder_loss` with ``binarize=False``
            trains an autoencoder).
        train_images, test_images: uint8 (N, 28, 28) or float (N, 784) in [0, 1].
        progress: show a tqdm bar.

    Returns:
        History: ``epoch``, ``train_<metric>`` and, with test images, ``test_<metric>``
        for each metric of the loss (the VAE's: ``loss``, ``log_px_given_z``, ``kl``).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite; it names the step, and the
            model then holds the last good parameters.
    """
    check_images(train_images, "fit")
    if test_images is not None:
        check_images(test_images, "fit (test_images)")
    state = create_train_state(model, tx=tx, learning_rate=learning_rate, binarize=binarize, loss_fn=loss_fn)
    k_train, k_test = jax.random.split(key)
    steps_per_epoch = _check_epoch(len(train_images), batch_size)
    train_images = jnp.asarray(train_images)  # on the device once (uint8 stays uint8)
    history: dict[str, list] = {"epoch": []}
    bar, finish_bar = _progress_bar(epochs * steps_per_epoch) if progress else (None, None)
    try:
        for epoch in range(1, epochs + 1):
            state, per_step = train_epoch_fused(
                state, train_images, jax.random.fold_in(k_train, epoch), batch_size, progress=bar
            )
            nnx.update(model, state.params)
            bad = np.flatnonzero(~np.isfinite(per_step["loss"]))
            if bad.size:
                raise NonFiniteLossError((epoch - 1) * steps_per_epoch + int(bad[0]) + 1, history)
            history["epoch"].append(epoch)
            for name, values in per_step.items():
                history.setdefault("train_" + name, []).append(float(np.mean(values, dtype=np.float64)))
            if test_images is not None:
                test = evaluate(model, test_images, k_test, binarize=binarize, loss_fn=loss_fn)
                for name, v in test.items():
                    history.setdefault("test_" + name, []).append(v)
            if bar is not None:
                bar.set_postfix(loss=f"{history['train_loss'][-1]:.1f}")
    finally:
        if bar is not None:
            finish_bar()
    return history


def _progress_bar(total: int):
    """A tqdm bar of ``total`` steps and the function that closes it.

    In a notebook the bar is a widget, and a saved notebook keeps the text shown when it was
    first displayed (0 %). So the widget is displayed with a display id, and closing it
    refreshes that output with the final state (100 %, the time taken).
    """
    from tqdm.auto import tqdm

    try:
        from IPython import get_ipython
        from IPython.display import display
        from tqdm.notebook import tqdm as notebook_tqdm

        in_notebook = get_ipython() is not None and "IPKernelApp" in get_ipython().config
        bar = notebook_tqdm(total=total, desc="training", unit="step", display=False) if in_notebook else None
    except Exception:  # noqa: BLE001 - no IPython or no ipywidgets: a text bar
        bar = None
    if bar is None:
        bar = tqdm(total=total, desc="training", unit="step")
        return bar, bar.close
    handle = display(bar.container, display_id=True)

    def finish():
        bar.close()
        handle.update(bar.container)

    return bar, finish
