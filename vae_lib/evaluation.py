"""Evaluating a trained model: the test negative ELBO (or any loss's metrics) in nats per image.

The importance-weighted bound, a tighter estimate of log p(x), is
:func:`vae_lib.objectives.importance_weighted_bound`; :func:`log_likelihood_bound` computes it with
thousands of samples per image over a whole test set, in chunks (notebook 06).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from vae_lib.data import binarize, check_images, prepare_batch, to_float
from vae_lib.losses import vae_loss
from vae_lib.objectives import elbo_single_sample

__all__ = ["binarize_once", "eval_step", "evaluate", "log_likelihood_bound"]


@functools.partial(jax.jit, static_argnums=(1, 4))
def eval_step(params, graphdef: nnx.GraphDef, x: jax.Array, key: jax.Array, loss_fn: Callable = vae_loss) -> dict:
    """Metrics of ``loss_fn`` on one prepared batch ``x`` (for the VAE: z sampled from q)."""
    return loss_fn(params, graphdef, x, key)[1]


def evaluate(
    model: nnx.Module,
    images: ArrayLike,
    key: jax.Array,
    batch_size: int = 1000,
    binarize: bool = True,
    loss_fn: Callable = vae_loss,
) -> dict[str, float]:
    """Mean metrics of ``loss_fn`` over all of ``images``: for a VAE, the test negative ELBO.

    z is sampled from q(z|x) for each image: decoding the posterior mean instead would not
    be the ELBO. Batch i is binarized (with ``binarize``) and sampled with the two halves
    of ``jax.random.split(jax.random.fold_in(key, i))``.

    Args:
        model: the trained model (not modified).
        images: uint8 (N, 28, 28) or float (N, 784) in [0, 1].
        key: a ``jax.random.key``; the same key gives the same numbers.

    Returns:
        ``{metric: mean over the images}`` in nats per image (``loss``, ``log_px_given_z``
        and ``kl`` for the VAE).
    """
    check_images(images, "evaluate")
    graphdef, params = nnx.split(model)
    totals: dict[str, float] = {}
    n = len(images)
    for i, start in enumerate(range(0, n, batch_size)):
        k_bin, k_z = jax.random.split(jax.random.fold_in(key, i))
        x = prepare_batch(jnp.asarray(images[start : start + batch_size]), k_bin, binarize)
        out = eval_step(params, graphdef, x, k_z, loss_fn)
        for name, v in out.items():
            totals[name] = totals.get(name, 0.0) + float(v) * len(x)
    return {name: v / n for name, v in totals.items()}


def binarize_once(images: ArrayLike, key: jax.Array) -> np.ndarray:
    """One fixed binarization of a test set, float32 (N, D): pixel d of image n is 1 with probability x_nd.

    The whole set is drawn with one ``key``, so the result does not depend on batch sizes;
    a published number states its seed, and this is how the series fixes it.
    """
    return np.asarray(binarize(key, jnp.asarray(to_float(images, "binarize_once"))))


@functools.partial(jax.jit, static_argnums=(1, 5, 6))
def _iw_batch(params, graphdef, x, index, key, k: int, chunk: int):
    """Running logsumexp over k // chunk chunks of log-weights for one batch: (L_k, mean log w) per image."""
    model = nnx.merge(graphdef, params)
    mean, logvar = model.encoder(x)
    std = jnp.exp(0.5 * logvar)
    image_keys = jax.vmap(lambda n: jax.random.fold_in(key, n))(index)
    b, latent = mean.shape

    def body(carry, c):
        run_max, run_sum, total = carry
        eps = jax.vmap(lambda kn: jax.random.normal(jax.random.fold_in(kn, c), (chunk, latent)))(image_keys)
        z = mean[:, None, :] + std[:, None, :] * eps  # (B, chunk, latent)
        logits = model.decoder(z.reshape(b * chunk, latent)).reshape(b, chunk, -1)
        x_b = jnp.broadcast_to(x[:, None, :], logits.shape)
        log_w = elbo_single_sample(x_b, logits, z, mean[:, None, :], logvar[:, None, :])  # (B, chunk)
        new_max = jnp.maximum(run_max, jnp.max(log_w, axis=1))
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(jnp.exp(log_w - new_max[:, None]), axis=1)
        return (new_max, run_sum, total + jnp.sum(log_w, axis=1)), None

    init = (jnp.full((b,), -jnp.inf), jnp.zeros((b,)), jnp.zeros((b,)))
    (run_max, run_sum, total), _ = jax.lax.scan(body, init, jnp.arange(k // chunk))
    return run_max + jnp.log(run_sum) - math.log(k), total / k


def log_likelihood_bound(
    model: nnx.Module,
    x: ArrayLike,
    key: jax.Array,
    k: int = 5000,
    *,
    batch_size: int = 50,
    chunk: int = 250,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """The importance-weighted bound L_k of every image, and its ELBO from the same draws.

    L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. 2016;
    :func:`vae_lib.objectives.importance_weighted_bound` for small k), accumulated over
    ``k // chunk`` chunks with a running logsumexp, so k = 5000 fits in memory. The mean of
    the same k log-weights is an estimate of the ELBO with k times less noise than one draw.

    Image n's draws come from ``jax.random.fold_in(key, n)`` (n its row in ``x``) and chunk c
    of them from ``fold_in`` of that by c: the numbers do not depend on ``batch_size``.

    Args:
        model: a :class:`vae_lib.models.VAE`.
        x: binary images (N, D), e.g. from :func:`binarize_once`; they are not binarized here.
        key: a ``jax.random.key``.
        k: samples per image (a multiple of ``chunk``).
        batch_size, chunk: images and samples per compiled piece (memory: about
            ``batch_size * chunk * D * 12`` bytes).
        progress: called with the number of images done after each batch.

    Returns:
        ``{"log_px": L_k per image, "elbo": mean log-weight per image}``, float64 arrays (N,) in nats.

    Raises:
        ValueError: ``k`` is not a positive multiple of ``chunk``, or ``x`` is not (N, D) in [0, 1].
    """
    if k <= 0 or chunk <= 0 or k % chunk:
        raise ValueError(f"k = {k} must be a positive multiple of chunk = {chunk} (e.g. chunk = {math.gcd(k, 250)}).")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"log_likelihood_bound expects flattened images (N, D); got shape {x.shape}.")
    check_images(x, "log_likelihood_bound")
    graphdef, params = nnx.split(model)
    log_px, elbo = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        index = jnp.arange(start, start + len(xb))
        lp, el = _iw_batch(params, graphdef, jnp.asarray(xb), index, key, k, chunk)
        log_px.append(np.asarray(lp, np.float64))
        elbo.append(np.asarray(el, np.float64))
        if progress is not None:
            progress(start + len(xb))
    return {"log_px": np.concatenate(log_px), "elbo": np.concatenate(elbo)}
