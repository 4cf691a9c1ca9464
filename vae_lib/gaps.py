"""Why the encoder's ELBO is below log p(x): the approximation and amortization gaps (notebook 06).

For one image x and the encoder's q(z|x) (Cremer, Li & Duvenaud 2018):

    log p(x) - ELBO(q_encoder) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_encoder)]
                                    approximation gap      amortization gap

where q* is the best diagonal Gaussian for this x alone. The approximation gap is what the
family of diagonal Gaussians costs; the amortization gap is what sharing one encoder across
all images costs. :func:`optimize_q` finds q* by gradient ascent on the ELBO of each image's
own mean and log-variance, starting from the encoder's output, with the decoder fixed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from vae_lib.objectives import bernoulli_log_likelihood, kl_to_standard_normal, reparameterize

__all__ = ["elbo_of_q", "optimize_q", "split_gap"]


def _check(x, mean, logvar):
    x, mean, logvar = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(logvar)
    if x.ndim != 2 or mean.ndim != 2 or mean.shape != logvar.shape or mean.shape[0] != x.shape[0]:
        raise ValueError(
            f"expected x (N, D) and mean, logvar (N, J) for the same N images; "
            f"got x {x.shape}, mean {mean.shape}, logvar {logvar.shape}."
        )
    return x, mean, logvar


def _elbo_terms(params, graphdef, x, mean, logvar, key, samples: int):
    decoder = nnx.merge(graphdef, params)
    keys = jax.random.split(key, samples)
    # 16 draws at a time: memory stays at 16 decoder outputs however many samples are asked for
    rec = jax.lax.map(
        lambda k: bernoulli_log_likelihood(x, decoder(reparameterize(k, mean, logvar))), keys, batch_size=16
    )
    return jnp.mean(rec, axis=0) - kl_to_standard_normal(mean, logvar)


_elbo = jax.jit(_elbo_terms, static_argnums=(1, 6))


def elbo_of_q(
    model: nnx.Module, x: ArrayLike, mean: ArrayLike, logvar: ArrayLike, key: jax.Array, samples: int = 100
) -> jax.Array:
    """The ELBO of each image under q = N(mean, diag(exp(logvar))), per image (N,), in nats.

    E_q[log p(x|z)] by the average over `samples` reparameterized draws, the KL in closed form.
    `mean` and `logvar` need not come from the encoder: this scores any diagonal q.
    """
    x, mean, logvar = _check(x, mean, logvar)
    graphdef, params = nnx.split(model.decoder)
    return _elbo(params, graphdef, x, mean, logvar, key, samples)


@functools.partial(jax.jit, static_argnums=(1, 6, 7, 8))
def _optimize(params, graphdef, x, mean, logvar, key, steps: int, learning_rate: float, samples: int):
    tx = optax.adam(learning_rate)
    q = (mean, logvar)

    def neg_elbo(q, k):  # a sum over images: each image's q gets its own image's gradient
        return -jnp.sum(_elbo_terms(params, graphdef, x, q[0], q[1], k, samples))

    def step(carry, i):
        q, opt_state = carry
        loss, grads = jax.value_and_grad(neg_elbo)(q, jax.random.fold_in(key, i))
        updates, opt_state = tx.update(grads, opt_state, q)
        return (optax.apply_updates(q, updates), opt_state), loss / x.shape[0]

    (q, _), trace = jax.lax.scan(step, (q, tx.init(q)), jnp.arange(steps))
    return q[0], q[1], trace


def optimize_q(
    model: nnx.Module,
    x: ArrayLike,
    mean: ArrayLike,
    logvar: ArrayLike,
    key: jax.Array,
    *,
    steps: int = 300,
    learning_rate: float = 1e-2,
    samples: int = 8,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Each image's own best diagonal Gaussian q*, by Adam on its mean and log-variance.

    Starts from ``(mean, logvar)`` (the encoder's output) and takes `steps` Adam steps on the
    ELBO of every image at once; the images do not interact (the objective is a sum over
    images and Adam is elementwise), so this is N separate optimisations. The decoder is not
    changed. Each step estimates the reconstruction term with `samples` draws.

    Returns:
      ``(mean*, logvar*, trace)``: the optimised parameters (N, J) and the mean negative ELBO
      estimate at each step (steps,).
    """
    x, mean, logvar = _check(x, mean, logvar)
    graphdef, params = nnx.split(model.decoder)
    return _optimize(params, graphdef, x, mean, logvar, key, steps, learning_rate, samples)


def split_gap(log_px: ArrayLike, elbo_encoder: ArrayLike, elbo_optimized: ArrayLike) -> dict[str, float]:
    """The mean total, approximation and amortization gaps (nats per image) from per-image numbers.

    total = log p(x) - ELBO(q_encoder), approximation = log p(x) - ELBO(q*),
    amortization = ELBO(q*) - ELBO(q_encoder); total = approximation + amortization.
    """
    lp, enc, opt = (np.asarray(a, np.float64) for a in (log_px, elbo_encoder, elbo_optimized))
    if not lp.shape == enc.shape == opt.shape:
        raise ValueError(f"three per-image arrays of one shape expected; got {lp.shape}, {enc.shape}, {opt.shape}.")
    return {
        "total": float(np.mean(lp - enc)),
        "approximation": float(np.mean(lp - opt)),
        "amortization": float(np.mean(opt - enc)),
    }
