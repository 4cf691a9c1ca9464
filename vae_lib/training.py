"""Training and evaluating the VAE with Optax: pure, jitted steps and a small epoch loop.

The step is a pure function of a :class:`TrainState` (parameters, optimizer state, step
counters): ``state, metrics = train_step(state, images, key)``. It is compiled once by
``jax.jit`` with the state's buffers donated, so XLA updates the parameters in place.
Losses are computed per example and averaged over the batch: nats per image.

:func:`fit` and :func:`train_epoch` run a whole epoch (or a chunk of one, for the progress
bar) inside one compiled loop: the uint8 images sit on the device, each batch is gathered
and binarized there (the next batch while the current step runs, so the random-number
work overlaps the matrix products), and the step's key is folded in there, so the host
does no per-step work. They give the same numbers as calling :func:`train_step` once per
batch.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from vae_lib.data import batch_indices, binarize
from vae_lib.objectives import bernoulli_log_likelihood, vae_elbo


def release_memory() -> None:
    """Free the memory held by compiled programs: clear JAX's caches, return it to the OS.

    Every compiled program (each jitted function, and each operation run eagerly, per
    shape) stays cached, and the memory freed when the caches are cleared stays with the
    process unless the C allocator hands it back. In a long notebook session that grows
    the process by hundreds of megabytes. Call this between stages, not inside a loop:
    anything used again afterwards is compiled again.
    """
    jax.clear_caches()
    gc.collect()
    try:  # glibc (Linux) keeps freed memory unless asked; other C libraries lack this call
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
    """Everything a training step changes, plus the static parts it needs."""

    params: Any
    opt_state: Any
    step: jax.Array  # steps taken so far (int32)
    bad_step: jax.Array  # first step (from 1) whose loss was not finite, or 0
    graphdef: Any = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss_fn: Callable = struct.field(pytree_node=False)
    binarize: bool = struct.field(pytree_node=False, default=True)


@functools.lru_cache(maxsize=16)
def _cached_adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def _adam(learning_rate) -> optax.GradientTransformation:
    """optax.adam, the same object for the same float learning rate.

    The optimizer is a static part of the compiled step, so reusing it lets a second
    ``fit`` of the same architecture reuse the compiled code instead of compiling again.
    """
    try:
        return _cached_adam(float(learning_rate))
    except TypeError:  # a schedule (a function of the step count)
        return optax.adam(learning_rate)


def create_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    binarize: bool = True,
    loss_fn: Callable | None = None,
) -> TrainState:
    """Split an NNX model into a graph definition and parameters, and set up the optimizer.

    ``loss_fn(params, graphdef, x, key) -> (loss, metrics)`` defaults to :func:`vae_loss`;
    :func:`autoencoder_loss` trains an :class:`vae_lib.models.Autoencoder` with the same step.

    ``binarize=True`` trains on dynamically binarized pixels (a true Bernoulli likelihood);
    False trains on grey pixels (binary cross-entropy, not a normalised likelihood).
    """
    tx = tx if tx is not None else _adam(learning_rate)
    graphdef, params = nnx.split(model)
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        bad_step=jnp.zeros((), jnp.int32),
        graphdef=graphdef,
        tx=tx,
        loss_fn=loss_fn if loss_fn is not None else vae_loss,
        binarize=binarize,
    )


def prepare_batch(images, key, use_binarize: bool):
    """uint8 (B, 28, 28) or float (B, 784) images -> float32 (B, D) in [0, 1], binarized if asked."""
    x = images.reshape(images.shape[0], -1)
    x = x.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else x.astype(jnp.float32)
    return binarize(key, x) if use_binarize else x


def vae_loss(params, graphdef, x, key):
    """Negative ELBO (analytic KL), mean over the batch, and per-term metrics."""
    model = nnx.merge(graphdef, params)
    terms = vae_elbo(model, x, key)
    loss = -jnp.mean(terms["elbo"])
    return loss, {"loss": loss, "log_px_given_z": jnp.mean(terms["log_px_given_z"]), "kl": jnp.mean(terms["kl"])}


def autoencoder_loss(params, graphdef, x, key):
    """Reconstruction cross-entropy of an autoencoder, summed over pixels, mean over the batch.

    -sum_d [x_d log s_d + (1 - x_d) log(1 - s_d)] with s = sigmoid(logits): the same
    function as the VAE's reconstruction term, with no sampling (``key`` is unused).
    """
    del key
    model = nnx.merge(graphdef, params)
    loss = -jnp.mean(bernoulli_log_likelihood(x, model(x)))
    return loss, {"loss": loss}


def _step_inputs(images, key, use_binarize: bool):
    """What a step draws before it touches the model: the batch (binarized) and z's key."""
    k_bin, k_z = jax.random.split(key)
    return prepare_batch(images, k_bin, use_binarize), k_z


def _apply_step(state: TrainState, x, k_z):
    """Gradient of the loss at the prepared batch `x` and one optimizer update."""
    grads, metrics = jax.grad(state.loss_fn, has_aux=True)(state.params, state.graphdef, x, k_z)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    # An update with a non-finite loss is not applied, nor any after it: the state keeps
    # the last good parameters and remembers where things went wrong.
    finite = jnp.isfinite(metrics["loss"])
    ok = finite & (state.bad_step == 0)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    bad_step = jnp.where((~finite) & (state.bad_step == 0), step, state.bad_step)
    return state.replace(
        params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state), step=step, bad_step=bad_step
    ), metrics


def _train_step(state: TrainState, images, key):
    return _apply_step(state, *_step_inputs(images, key, state.binarize))


plain_train_step = _train_step
plain_train_step.__doc__ = """The training step as plain Python, before ``jax.jit``: for experiments with jit.

Same arguments and results as :func:`train_step`, which is ``jax.jit(plain_train_step,
donate_argnums=0)``. Called directly it runs eagerly, one operation at a time.
"""

train_step = jax.jit(_train_step, donate_argnums=0)
train_step.__doc__ = """One Adam step on a batch: returns (new state, metrics). Jitted, state donated.

`images` are uint8 (B, 28, 28) or float in [0, 1]; `key` drives binarization and z.
"""


@functools.partial(jax.jit, static_argnums=(1, 4))
def eval_step(params, graphdef, x, key, loss_fn=vae_loss):
    """Per-batch metrics of `loss_fn` (for the VAE: z sampled from q, not its mean)."""
    return loss_fn(params, graphdef, x, key)[1]


def check_images(images, who: str = "training") -> None:
    """Host-side check of a whole image array before it enters a jitted loop."""
    images = np.asarray(images)
    if images.ndim not in (2, 3):
        raise ValueError(f"{who} expects images of shape (N, 28, 28) or (N, 784); got {images.shape}.")
    if images.dtype != np.uint8:
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{who} images contain NaN or infinite values.")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{who} expects uint8 pixels or floats in [0, 1] (the Bernoulli "
                f"likelihood); got values in [{lo:g}, {hi:g}]. Divide by 255."
            )


def evaluate(
    model: nnx.Module, images, key, batch_size: int = 1000, binarize: bool = True, loss_fn: Callable = None
) -> dict:
    """Test negative ELBO in nats per image, with its two terms, over all of `images`.

    z is sampled from q(z|x) for each image: decoding the posterior mean instead would not
    be the ELBO. With ``binarize`` each image is binarized once with `key`.
    """
    check_images(images, "evaluate")
    graphdef, params = nnx.split(model)
    totals, n = {}, len(images)
    for i, start in enumerate(range(0, n, batch_size)):
        kb, kz = jax.random.split(jax.random.fold_in(key, i))
        x = prepare_batch(jnp.asarray(images[start : start + batch_size]), kb, binarize)
        out = eval_step(params, graphdef, x, kz, loss_fn or vae_loss)
        for name, v in out.items():
            totals[name] = totals.get(name, 0.0) + float(v) * len(x)
    return {name: v / n for name, v in totals.items()}


def step_matmul_flops(in_features: int = 784, hidden: int | Sequence[int] = 400, latent: int = 20) -> int:
    """Exact matmul FLOPs of one VAE training step, per image (forward and backward).

    A dense layer with a inputs and b outputs costs 2ab FLOPs per image (a multiply and an
    add per weight) in the forward pass. The backward pass costs 2ab for the weight
    gradient (X^T G) and 2ab for the input gradient (G W^T), except for the first encoder
    layer, whose input is the data and needs no gradient. The encoder's two heads (mean
    and log-variance) both feed the sampled z, so both need their input gradient.
    Biases, activations, the loss, sampling and the optimizer are not matmuls and are not
    counted (at the default sizes they add roughly 5% more operations, mostly Adam's
    update and the random numbers).
    For 784-400-20: forward 1,302,400 + backward 1,977,600 = 3,280,000 FLOPs per image.
    """
    h = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    h = tuple(x for x in h if x > 0)
    enc = list(zip((in_features, *h[:-1]), h, strict=False)) if h else []
    width = h[-1] if h else in_features
    heads = [(width, latent), (width, latent)]
    dec = list(zip((latent, *reversed(h)), (*reversed(h), in_features), strict=False))
    layers = enc + heads + dec
    forward = sum(2 * a * b for a, b in layers)
    on_data = enc[:1] if enc else heads  # layers reading the images: no input gradient
    input_grads = forward - sum(2 * a * b for a, b in on_data)
    return 2 * forward + input_grads


def _zero_metrics(state: TrainState, images, batch_size: int):
    """Zeros shaped like the step's metrics (found by tracing, without running it)."""
    batch = jax.ShapeDtypeStruct((batch_size, *images.shape[1:]), images.dtype)
    shapes = jax.eval_shape(_train_step, state, batch, jax.random.key(0))[1]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@functools.partial(jax.jit, static_argnames=("batch_size",), donate_argnums=(0, 1))
def _train_steps(state: TrainState, sums, images, order, key, start, stop, *, batch_size: int):
    """Steps start..stop-1 of an epoch in one compiled loop, the data staying on the device.

    Step i trains on images[order[i*B:(i+1)*B]] with the key fold_in(key, i): the same
    batches and keys as calling :func:`train_step` once per batch (see
    :func:`train_epoch`), so both give the same numbers. `start` and `stop` are traced,
    so any split of the epoch into chunks (for a progress bar) reuses one compilation.
    """
    last = order.shape[0] // batch_size - 1

    def inputs(i):  # the batch and keys of step i (a step past the end repeats the last)
        i = jnp.minimum(i, last)
        idx = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
        return _step_inputs(jnp.take(images, idx, axis=0), jax.random.fold_in(key, i), state.binarize)

    def body(i, carry):
        state, sums, x, k_z = carry
        # Software pipelining: draw step i+1's binarized batch while step i runs. The two
        # are independent, so XLA can overlap the random-number work with the matmuls.
        next_x, next_k_z = inputs(i + 1)
        state, metrics = _apply_step(state, x, k_z)
        return state, jax.tree.map(jnp.add, sums, metrics), next_x, next_k_z

    state, sums, _, _ = jax.lax.fori_loop(start, stop, body, (state, sums, *inputs(start)))
    return state, sums


def train_epoch(
    state: TrainState,
    images,
    key,
    batch_size: int = 128,
    step_fn: Callable | None = None,
    progress=None,
    chunks: int = 20,
):
    """One pass over `images` in a seeded shuffled order: returns (state, mean metrics).

    The shuffled order comes from ``jax.random.permutation`` of the first half of
    ``jax.random.split(key)``; batch i (the last partial batch is dropped) is trained with
    the key ``jax.random.fold_in(second half, i)``.

    By default the whole epoch runs inside compiled code (:func:`_train_steps`): the
    images go to the device once, each batch is gathered there, and the host only
    launches a few loops (`chunks` of them when a `progress` bar is given, one otherwise).
    With a `step_fn` (such as :func:`train_step`) the host runs the same steps one call per
    batch instead; the two ways give the same parameters and metrics.
    """
    k_perm, k_steps = jax.random.split(key)
    n_steps = len(images) // batch_size
    if n_steps == 0:
        raise ValueError(
            f"an epoch needs at least one full batch: {len(images)} images is fewer than batch_size={batch_size}."
        )
    if step_fn is None:
        images = jnp.asarray(images)
        order = jax.random.permutation(k_perm, len(images))
        sums = _zero_metrics(state, images, batch_size)
        n_chunks = 1 if progress is None else max(1, min(chunks, n_steps))
        bounds = [round(j * n_steps / n_chunks) for j in range(n_chunks + 1)]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=False):
            state, sums = _train_steps(state, sums, images, order, k_steps, start, stop, batch_size=batch_size)
            if progress is not None:
                jax.block_until_ready(state.step)  # let the bar follow the computation
                progress.update(stop - start)
    else:
        sums = None
        for i, idx in enumerate(batch_indices(k_perm, len(images), batch_size)):
            state, metrics = step_fn(state, images[idx], jax.random.fold_in(k_steps, i))
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            if progress is not None:
                progress.update(1)
    means = {k: float(v) / n_steps for k, v in sums.items()}
    return state, means


def fit(
    model: nnx.Module,
    train_images,
    *,
    key,
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    tx: optax.GradientTransformation | None = None,
    test_images=None,
    binarize: bool = True,
    progress: bool = True,
    loss_fn: Callable | None = None,
) -> dict:
    """Train `model` in place and return its history (per-epoch metrics, nats per image).

    History keys: ``epoch``, ``train_loss``, ``train_log_px_given_z``, ``train_kl`` and,
    with `test_images`, ``test_loss``, ``test_log_px_given_z``, ``test_kl`` (z sampled).
    ``loss_fn`` defaults to the VAE's negative ELBO; pass :func:`autoencoder_loss` (with
    ``binarize=False``) to train an autoencoder (history then has only the loss).
    On a non-finite loss it stops with :class:`NonFiniteLossError` naming the step; the
    model then holds the last good parameters.
    """
    check_images(train_images, "fit")
    if test_images is not None:
        check_images(test_images, "fit (test_images)")
    loss_fn = loss_fn or vae_loss
    state = create_train_state(model, tx=tx, learning_rate=learning_rate, binarize=binarize, loss_fn=loss_fn)
    history: dict[str, list] = {"epoch": []}
    k_train, k_test = jax.random.split(key)
    steps_per_epoch = len(train_images) // batch_size
    train_images = jnp.asarray(train_images)  # on the device once (uint8 stays uint8)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc="training", unit="step")
    try:
        for epoch in range(1, epochs + 1):
            state, means = train_epoch(
                state, train_images, jax.random.fold_in(k_train, epoch), batch_size, progress=bar
            )
            bad = int(state.bad_step)
            if bad:
                nnx.update(model, state.params)
                raise NonFiniteLossError(bad, history)
            history["epoch"].append(epoch)
            for name, v in means.items():
                history.setdefault("train_" + name, []).append(v)
            if test_images is not None:
                nnx.update(model, state.params)
                test = evaluate(model, test_images, k_test, binarize=binarize, loss_fn=loss_fn)
                for name, v in test.items():
                    history.setdefault("test_" + name, []).append(v)
            if bar is not None:
                bar.set_postfix(loss=f"{means['loss']:.1f}")
    finally:
        if bar is not None:
            bar.close()
    nnx.update(model, state.params)
    return history
