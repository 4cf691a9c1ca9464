"""What the KL term hides: active units and the aggregate posterior (notebook 06).

A VAE's rate, the average KL(q(z|x) || p(z)), says how many nats the code carries, but not
where they go. Two measurements split it:

* **Active units** (Burda et al. 2016, sec. 5.2): latent dimension j is active when the mean
  of q(z_j|x) moves with x, A_j = Cov_x(E_q[z_j | x]) > 0.01. A dimension whose posterior is
  the prior for every x (posterior collapse) has A_j = 0 and KL_j = 0.
* **The aggregate posterior** q(z) = (1/N) sum_n q(z|x_n), the distribution of codes over the
  data set. Hoffman & Johnson (2016) split the average KL exactly:

      (1/N) sum_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)),

  the mutual information between an image's index and its code (at most log N) plus how far
  the codes' distribution is from the prior. Prior samples from where q(z) is small decode
  to images the decoder never trained on.

  The Monte Carlo estimate of I_q with the N images' own codes has the form of InfoNCE (van den
  Oord et al. 2018; Poole et al. 2019), so it cannot tell more than log N nats apart: for a
  code of many dimensions it under-states I_q and over-states KL(q(z) || p(z)).
  :func:`marginal_kl_bounds` brackets the marginal KL from both sides: below by the KL of the
  Gaussian with q(z)'s mean and covariance (:func:`moment_matched_kl`), above by that estimate.

The threshold 0.01 on A_j is also a floor in nats: R_j = (1/N) sum_n KL(q(z_j|x_n) || N(0, 1))
>= A_j / 2, so an active unit carries more than 0.005 nats (:func:`rate_and_distortion` gives
every R_j, to read beside the count).

Inputs are the encoder's outputs on a data set: ``means`` and ``logvars`` of shape (N, J).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from vae_lib.objectives import (
    LOG_2PI,
    bernoulli_log_likelihood,
    kl_per_dimension,
    kl_to_standard_normal,
    standard_normal_log_density,
)

__all__ = [
    "ACTIVE_THRESHOLD",
    "active_units",
    "aggregate_log_density",
    "kl_decomposition",
    "marginal_kl_bounds",
    "moment_matched_kl",
    "rate_and_distortion",
    "unit_activity",
]

#: Burda et al.'s threshold on Cov_x(E_q[z_j | x]).
ACTIVE_THRESHOLD = 0.01


def _codes(means: ArrayLike, logvars: ArrayLike | None = None, min_n: int = 1) -> tuple[jax.Array, jax.Array | None]:
    m = jnp.asarray(means)
    if m.ndim != 2 or m.shape[0] < min_n:
        raise ValueError(
            f"means must be the encoder's means on a data set, shape (N, J) with N >= {min_n}; got {m.shape}."
        )
    if logvars is None:
        return m, None
    lv = jnp.asarray(logvars)
    if lv.shape != m.shape:
        raise ValueError(f"logvars has shape {lv.shape} but means has {m.shape}; pass both from the same encoder call.")
    return m, lv


def unit_activity(means: ArrayLike) -> jax.Array:
    """A_j = Cov_x(E_q[z_j | x]): the variance over the data set of each posterior mean, shape (J,)."""
    m, _ = _codes(means, min_n=2)
    return jnp.var(m, axis=0)


def active_units(means: ArrayLike, threshold: float = ACTIVE_THRESHOLD) -> int:
    """How many latent dimensions are active: A_j > `threshold` (Burda et al. 2016, eq. in sec. 5.2)."""
    return int(jnp.sum(unit_activity(means) > threshold))


@functools.partial(jax.jit, static_argnums=1)
def _measure(params, graphdef, x, key):
    logits, _, mean, logvar = nnx.merge(graphdef, params)(x, key)
    kl_j = kl_per_dimension(mean, logvar)
    return -jnp.mean(bernoulli_log_likelihood(x, logits)), jnp.mean(kl_j, axis=0), jnp.var(mean, axis=0)


def rate_and_distortion(model: nnx.Module, x: ArrayLike, key: jax.Array) -> dict:
    """A VAE's two ELBO terms on binary images `x` (N, D), per dimension where it has them.

    Rate R = (1/N) sum_n KL(q(z|x_n) || p(z)) (closed form), distortion
    D = -(1/N) sum_n log p(x_n | z_n) with one z_n ~ q(z|x_n) each (key `key`); -ELBO = D + R
    (Alemi et al. 2018). One compiled program per architecture.

    Returns:
      ``{"rate", "distortion", "neg_elbo"}`` (floats, nats per image), ``"kl_per_dim"`` (J,)
      (the rate's share of each latent dimension), ``"activity"`` (J,) (:func:`unit_activity`)
      and ``"active_units"``.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be flattened binary images (N, D); got shape {x.shape}.")
    graphdef, params = nnx.split(model)
    distortion, kl_j, activity = _measure(params, graphdef, x, key)
    rate = float(jnp.sum(kl_j))
    return {
        "rate": rate,
        "distortion": float(distortion),
        "neg_elbo": float(distortion) + rate,
        "kl_per_dim": np.asarray(kl_j),
        "activity": np.asarray(activity),
        "active_units": int(np.sum(np.asarray(activity) > ACTIVE_THRESHOLD)),
    }


def aggregate_log_density(z: ArrayLike, means: ArrayLike, logvars: ArrayLike, chunk: int = 512) -> jax.Array:
    """log q(z) of the aggregate posterior q(z) = (1/N) sum_n N(z; m_n, diag(exp(lv_n))), for z (M, J).

    Exact for the empirical data set: a logsumexp over all N components. Each component's
    log-density is written as products of (M, J) and (J, N) matrices,
    -1/2 [sum_j z_j^2 / s_nj^2 - 2 z_j m_nj / s_nj^2 + m_nj^2 / s_nj^2 + log s_nj^2 + log 2 pi],
    so memory stays at `chunk` x N floats.
    """
    m, lv = _codes(means, logvars)
    z = jnp.asarray(z)
    if z.ndim != 2 or z.shape[1] != m.shape[1]:
        raise ValueError(f"z must be (M, {m.shape[1]}) points of the latent space; got shape {z.shape}.")
    prec = jnp.exp(-lv)  # (N, J)
    const = jnp.sum(m**2 * prec + lv, axis=1) + m.shape[1] * LOG_2PI  # (N,)
    pieces = [_mixture_log_density(z[i : i + chunk], prec, m * prec, const) for i in range(0, z.shape[0], chunk)]
    return jnp.concatenate(pieces) - math.log(m.shape[0])


@jax.jit
def _mixture_log_density(zc, prec, m_prec, const):  # log sum_n N(z; m_n, s_n) for a chunk of z
    quad = (zc**2) @ prec.T - 2.0 * zc @ m_prec.T + const  # (chunk, N)
    return jax.scipy.special.logsumexp(-0.5 * quad, axis=1)


def kl_decomposition(means: ArrayLike, logvars: ArrayLike, key: jax.Array, draws: int = 1) -> dict[str, float]:
    """The average KL split into I_q(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016), in nats.

    KL(q(z) || p(z)) = E_{z ~ q(z)}[log q(z) - log p(z)] is estimated by Monte Carlo with
    ``draws`` codes per image (z ~ q(z|x_n) for every n: a stratified sample of the mixture)
    and log q(z) exact (:func:`aggregate_log_density`); I_q(x; z) is the rest.

    Returns:
      ``{"average_kl", "mutual_information", "marginal_kl", "log_n"}``; the mutual information
      cannot exceed ``log_n`` = log N.
    """
    m, lv = _codes(means, logvars)
    eps = jax.random.normal(key, (draws, *m.shape))
    z = (m + jnp.exp(0.5 * lv) * eps).reshape(-1, m.shape[1])
    marginal = jnp.mean(aggregate_log_density(z, m, lv) - standard_normal_log_density(z))
    average = jnp.mean(kl_to_standard_normal(m, lv))
    return {
        "average_kl": float(average),
        "mutual_information": float(average - marginal),
        "marginal_kl": float(marginal),
        "log_n": math.log(m.shape[0]),
    }


def moment_matched_kl(means: ArrayLike, logvars: ArrayLike) -> float:
    """KL(N(mu, Sigma) || N(0, I)) for the mean mu and covariance Sigma of the aggregate posterior.

    q(z) = (1/N) sum_n N(m_n, diag(s_n^2)) has mean mu = mean_n m_n and covariance
    Sigma = Cov_n(m_n) + mean_n diag(s_n^2). Since log p(z) is quadratic, E_q[log p] is the same
    under q(z) and under the Gaussian g with its moments, and the Gaussian has the largest
    entropy of all distributions with that covariance, so

        KL(q(z) || p(z)) = KL(q || g) + KL(g || p) >= KL(g || p),

    a lower bound on the marginal KL, in closed form: 1/2 [tr Sigma + |mu|^2 - J - log det Sigma].
    """
    m, lv = _codes(means, logvars, min_n=2)
    m64, v64 = np.asarray(m, np.float64), np.exp(np.asarray(lv, np.float64))
    mu = m64.mean(axis=0)
    sigma = np.cov(m64, rowvar=False, bias=True).reshape(m64.shape[1], m64.shape[1]) + np.diag(v64.mean(axis=0))
    _, logdet = np.linalg.slogdet(sigma)
    return float(0.5 * (np.trace(sigma) + mu @ mu - m64.shape[1] - logdet))


def marginal_kl_bounds(means: ArrayLike, logvars: ArrayLike, key: jax.Array, draws: int = 1) -> dict[str, float]:
    """KL(q(z) || p(z)) bracketed: ``{"lower", "upper", "log_n"}`` in nats.

    ``lower`` is :func:`moment_matched_kl`, a bound for the mixture of these N posteriors.
    ``upper`` is :func:`kl_decomposition`'s marginal KL of that mixture: for the aggregate
    posterior of the population the images come from, it is an upper bound in expectation,
    since the I_q it leaves over is an InfoNCE-type lower bound on the information (at most
    log N). Both are measured on the N codes given; the upper one is close to the truth only
    when I_q is well under log N.
    """
    split = kl_decomposition(means, logvars, key, draws=draws)
    return {"lower": moment_matched_kl(means, logvars), "upper": split["marginal_kl"], "log_n": split["log_n"]}
