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
   :func:`train_epoch` (tests/test_training.py holds them equal), faster.
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
from vae_lib.notebook.progress import progress_bar

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "averaged_params",
    "create_train_state",
    "ema_of_params",
    "fit",
    "empty_metrics",
    "jit_train_step",
    "lower_epoch",
    "record",
    "step_batch",
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


def ema_of_params(decay: float) -> optax.GradientTransformation:
    """An exponential moving average of the parameters, updated after every step (Polyak averaging).

    Put it last in an ``optax.chain`` (``optax.chain(optax.adam(lr), ema_of_params(0.999))``):
    it leaves the updates as they are and keeps ema <- decay * ema + (1 - decay) * new params in
    its state, starting from the initial parameters. :func:`averaged_params` reads it.

    Args:
        decay: the weight of the old average, in [0, 1); 0.999 averages over about 1,000 steps.

    Returns:
        The transformation; its state is ``{"ema": params}``.
    """

    def update(updates, state, params):
        new = optax.apply_updates(params, updates)
        return updates, {"ema": jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state["ema"], new)}

    return optax.GradientTransformation(lambda params: {"ema": jax.tree.map(jnp.copy, params)}, update)


def averaged_params(state: TrainState) -> Any:
    """The average kept by :func:`ema_of_params`.

    Args:
        state: a state whose optimizer is an ``optax.chain`` ending with :func:`ema_of_params`.

    Returns:
        The averaged parameters, a tree like ``state.params`` (``nnx.merge(state.graphdef, it)`` is the model).
    """
    return state.opt_state[-1]["ema"]


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
def step_batch(images: jax.Array, order: jax.Array, key: jax.Array, i, batch_size: int, binarize: bool):
    """Inside a compiled epoch: step i's batch (rows ``order[i*B:(i+1)*B]`` of ``images``) and z's key.

    The same batch and keys :func:`train_epoch` draws for step i (``fold_in(key, i)``). Past
    the last step it repeats the last batch (a prefetch may ask for one step too many).
    """
    last = order.shape[0] // batch_size - 1
    idx = jax.lax.dynamic_slice_in_dim(order, jnp.minimum(i, last) * batch_size, batch_size)
    return step_inputs(jnp.take(images, idx, axis=0), jax.random.fold_in(key, i), binarize)


def record(per_step: dict, i, metrics: dict) -> dict:
    """Write step i's metrics into the per-step arrays (inside a compiled loop)."""
    return {name: per_step[name].at[i].set(metrics[name]) for name in per_step}


def empty_metrics(state: TrainState, images: jax.Array, batch_size: int, n_steps: int) -> dict:
    """Zeros for every metric of every step: the names come from tracing the loss once."""
    x = jax.ShapeDtypeStruct((batch_size, int(np.prod(images.shape[1:]))), jnp.float32)
    _, metrics = jax.eval_shape(state.loss_fn, state.params, state.graphdef, x, jax.random.key(0))
    return {name: jnp.zeros((n_steps, *m.shape), m.dtype) for name, m in metrics.items()}


@functools.partial(jax.jit, static_argnames=("batch_size",), donate_argnums=(0, 1))
def _fused_steps(state: TrainState, per_step, images, order, key, start, stop, *, batch_size: int):
    """Steps start..stop-1 of an epoch in one compiled loop; per_step[name][i] is filled in.

    `start` and `stop` are traced, so any split of the epoch into chunks (for a progress
    bar) reuses one compilation. Step i+1's batch is drawn while step i runs (the two are
    independent, so XLA may overlap the random numbers with the matrix products). The loop
    ends after the first step whose loss is not finite (a scalar test per step); that
    step's update *has* been applied, and ``healthy`` is False: the caller rolls back.
    Returns ``(state, per_step, healthy)``.
    """

    def body(i, carry):
        state, per_step, healthy, x, z_key = carry
        next_x, next_z_key = step_batch(images, order, key, i + 1, batch_size, state.binarize)
        state, metrics = apply_gradients(state, x, z_key)
        return state, record(per_step, i, metrics), healthy & jnp.isfinite(metrics["loss"]), next_x, next_z_key

    carry = (state, per_step, jnp.bool_(True), *step_batch(images, order, key, start, batch_size, state.binarize))
    _, (state, per_step, healthy, _, _) = jax.lax.while_loop(
        lambda i_carry: (i_carry[0] < stop) & i_carry[1][2],
        lambda i_carry: (i_carry[0] + 1, body(*i_carry)),
        (start, carry),
    )
    return state, per_step, healthy


def _epoch_order(key: jax.Array, num_images: int) -> tuple[jax.Array, jax.Array]:
    k_perm, k_steps = jax.random.split(key)
    return jax.random.permutation(k_perm, num_images), k_steps


def lower_epoch(state: TrainState, images: ArrayLike, key: jax.Array, batch_size: int = 128) -> jax.stages.Lowered:
    """The compiled program of one :func:`train_epoch_fused` epoch, lowered (``.as_text()``,
    ``.compile()``): what a profile matches its events against."""
    n_steps = _check_epoch(len(images), batch_size)
    images = jnp.asarray(images)
    order, k_steps = _epoch_order(key, len(images))
    per_step = empty_metrics(state, images, batch_size, n_steps)
    return _fused_steps.lower(state, per_step, images, order, k_steps, 0, n_steps, batch_size=batch_size)


def train_epoch_fused(
    state: TrainState,
    images: ArrayLike,
    key: jax.Array,
    batch_size: int = 128,
    progress=None,
    chunks: int = 20,
) -> tuple[TrainState, PerStep]:
    """:func:`train_epoch`'s steps inside one compiled loop: same batches, keys and results.

    The images go to the device once, each batch is gathered and binarized there, and the
    host only launches the loop (in ``chunks`` pieces when a ``progress`` bar, anything
    with an ``update(n)`` method, is given). When a step's loss is not finite, the
    returned state is the one from before that step; that step's metrics are recorded
    (NaN or inf), so the caller finds it in ``per_step["loss"]``, and later steps are not
    run (their metrics are NaN). How: the state is copied before each chunk of steps, the
    loop stops after a non-finite loss and, only then, the chunk's good steps run again
    from the copy (a guard that costs one scalar test per step; ``vae_lib.step_variants``
    has the other guards the speed lesson measures).

    Returns:
        ``(state, per_step)`` as :func:`train_epoch`.
    """
    n_steps = _check_epoch(len(images), batch_size)
    images = jnp.asarray(images)
    order, k_steps = _epoch_order(key, len(images))
    per_step = empty_metrics(state, images, batch_size, n_steps)
    n_chunks = 1 if progress is None else max(1, min(chunks, n_steps))
    bounds = [round(j * n_steps / n_chunks) for j in range(n_chunks + 1)]
    run = functools.partial(_fused_steps, images=images, order=order, key=k_steps, batch_size=batch_size)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        saved = jax.tree.map(jnp.copy, state)
        state, per_step, healthy = run(state, per_step, start=start, stop=stop)
        if not bool(healthy):
            bad = start + int(np.flatnonzero(~np.isfinite(np.asarray(per_step["loss"][start:stop])))[0])
            state, per_step, _ = run(saved, per_step, start=start, stop=bad)  # the good steps again, from the copy
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
    schedule: Callable[[int], LossFn] | None = None,
    eval_name: str = "test",
    on_epoch_end: Callable[[int, TrainState, dict], bool] | None = None,
    resume: tuple[TrainState, dict] | None = None,
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
        schedule: the training loss of epoch e, ``schedule(e)`` (a KL warm-up, say); ``loss_fn``
            is then only what the held-out images are scored with. Return the same function
            object for the same loss, or every epoch compiles again.
        eval_name: the prefix of the held-out metrics in the history (``"valid"`` for a
            validation split).
        on_epoch_end: called after each epoch as ``on_epoch_end(epoch, state, history)``;
            returning True stops training (early stopping, saving a resume file).
        resume: ``(state, history)`` of a run cut off after epoch ``history["epoch"][-1]``:
            training continues from there, with the keys it would have used.

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
    if resume is None:
        state = create_train_state(model, tx=tx, learning_rate=learning_rate, binarize=binarize, loss_fn=loss_fn)
        history: dict[str, list] = {"epoch": []}
    else:
        state, history = resume
    first = history["epoch"][-1] + 1 if history["epoch"] else 1
    k_train, k_test = jax.random.split(key)
    steps_per_epoch = _check_epoch(len(train_images), batch_size)
    train_images = jnp.asarray(train_images)  # on the device once (uint8 stays uint8)
    bar, finish_bar = progress_bar((epochs - first + 1) * steps_per_epoch) if progress else (None, None)
    try:
        for epoch in range(first, epochs + 1):
            if schedule is not None:
                state = state.replace(loss_fn=schedule(epoch))
            state, per_step = train_epoch_fused(
                state, train_images, jax.random.fold_in(k_train, epoch), batch_size, progress=bar
            )
            nnx.update(model, state.params)
            bad = np.flatnonzero(~np.isfinite(per_step["loss"]))
            if bad.size:
                raise NonFiniteLossError((epoch - 1) * steps_per_epoch + int(bad[0]) + 1, history)
            history["epoch"].append(epoch)
            means = {"train_" + name: float(np.mean(values, dtype=np.float64)) for name, values in per_step.items()}
            for name in [*means, *(k for k in history if k.startswith("train_") and k not in means)]:
                # one entry per epoch in every column: NaN where an epoch's loss did not report the
                # metric (a schedule's plain epochs have no `objective`), so column[i] is epoch i + 1's
                column = history.setdefault(name, [])
                column += [np.nan] * (len(history["epoch"]) - 1 - len(column)) + [means.get(name, np.nan)]
            if test_images is not None:
                test = evaluate(model, test_images, k_test, binarize=binarize, loss_fn=loss_fn)
                for name, v in test.items():
                    history.setdefault(f"{eval_name}_{name}", []).append(v)
            if bar is not None:
                bar.set_postfix(loss=f"{history['train_loss'][-1]:.1f}")
            if on_epoch_end is not None and on_epoch_end(epoch, state, history):
                break
    finally:
        if bar is not None:
            finish_bar()
    return history
