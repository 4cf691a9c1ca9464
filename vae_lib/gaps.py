"""Why the encoder's ELBO is below log p(x): the approximation and amortization gaps (notebook 06).

For one image x and the encoder's q(z|x) (Cremer, Li & Duvenaud 2018):

    log p(x) - ELBO(q_encoder) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_encoder)]
                                    approximation gap      amortization gap

where q* is the best diagonal Gaussian for this x alone. The approximation gap is what the
family of diagonal Gaussians costs; the amortization gap is what sharing one encoder across
all images costs. :func:`optimize_q` finds q* by gradient ascent on the ELBO of each image's
own mean and log-variance, starting from the encoder's output, with the decoder fixed.

What the measured numbers are, on a deep VAE: log p(x) is an importance-weighted bound L_k,
at or below log p(x), which biases both the total and the approximation gap down; and noisy
Adam finds a q-hat no better than q* (ELBO(q-hat) <= ELBO(q*)), which biases the
approximation gap up and the amortization gap down. So the total and the amortization gap are
lower bounds (up to noise), while the approximation gap is pushed both ways; :func:`split_gap`
gives each mean with its standard error over the images (which holds the Monte Carlo noise too).

:func:`linear_encoder_gaps` measures both gaps exactly on a linear-Gaussian model
(:mod:`vae_lib.linear_gaussian`), where q* and log p(x) are known in closed form.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from vae_lib import linear_gaussian as lg
from vae_lib.objectives import bernoulli_log_likelihood, kl_to_standard_normal, reparameterize

__all__ = ["elbo_of_q", "linear_encoder_gaps", "optimize_q", "split_gap"]


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
    ``<name>_se`` is each mean's standard error over the images (the spread of the per-image
    gaps / sqrt(N); 0 for one image): what another sample of images of the same kind would
    move it by, not the estimators' biases (module doc).
    """
    lp, enc, opt = (np.asarray(a, np.float64) for a in (log_px, elbo_encoder, elbo_optimized))
    if not lp.shape == enc.shape == opt.shape:
        raise ValueError(f"three per-image arrays of one shape expected; got {lp.shape}, {enc.shape}, {opt.shape}.")
    out = {}
    for name, g in (("total", lp - enc), ("approximation", lp - opt), ("amortization", opt - enc)):
        out[name] = float(np.mean(g))
        out[name + "_se"] = float(np.std(g, ddof=1) / np.sqrt(g.size)) if g.size > 1 else 0.0
    return out


def linear_encoder_gaps(
    model: lg.LinearGaussian, xs: ArrayLike, steps: int, learning_rate: float = 0.05
) -> dict[str, float]:
    """Both gaps, exactly, of a linear encoder trained for `steps` Adam steps on a linear-Gaussian model.

    The encoder is q(z|x) = N(A x + c, diag(exp(s))), started at A = 0, c = 0, s = 0 and trained
    on the exact average ELBO over the data points `xs` (N, D). log p(x), the encoder's ELBO
    and the best diagonal q*'s ELBO are all in closed form, so the split is exact.

    Returns:
      :func:`split_gap` of the N data points.
    """
    xs = jnp.asarray(xs)
    dim_z, dim_x = model.W.shape[1], xs.shape[1]

    def encoder_elbo(enc, x):
        return lg.elbo(model, x, enc["A"] @ x + enc["c"], jnp.diag(jnp.exp(enc["s"])))

    tx = optax.adam(learning_rate)
    loss = jax.jit(jax.grad(lambda e: -jnp.mean(jax.vmap(lambda x: encoder_elbo(e, x))(xs))))
    enc = {"A": jnp.zeros((dim_z, dim_x)), "c": jnp.zeros(dim_z), "s": jnp.zeros(dim_z)}
    opt = tx.init(enc)
    for _ in range(steps):
        updates, opt = tx.update(loss(enc), opt)
        enc = optax.apply_updates(enc, updates)
    log_px = jax.vmap(lambda x: lg.log_marginal(model, x))(xs)
    best = jax.vmap(lambda x: lg.elbo(model, x, *lg.best_diagonal_q(model, x)))(xs)
    return split_gap(log_px, jax.vmap(encoder_elbo, in_axes=(None, 0))(enc, xs), best)
