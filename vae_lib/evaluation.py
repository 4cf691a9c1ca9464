"""Evaluating a trained model: the test negative ELBO (or any loss's metrics) in nats per image.

The importance-weighted bound, a tighter estimate of log p(x), is
:func:`vae_lib.objectives.importance_weighted_bound`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from vae_lib.data import check_images, prepare_batch
from vae_lib.losses import vae_loss

__all__ = ["eval_step", "evaluate"]


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
