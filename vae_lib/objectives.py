"""Log-densities, the KL term and the ELBO, in nats.

Convention for every function here: sum over the dimensions of one example, keep the
batch axis. A training loss is the *mean over the batch* of these per-example values,
so every number the series prints is in nats per example (per image).

Equation numbers refer to the lecture note (shared/seeds/000_303b5e48acb7a591.txt) in
its corrected form; the corrections are derived and checked in notebook 02.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

__all__ = [
    "LOG_2PI",
    "bernoulli_entropy",
    "bernoulli_log_integral",
    "bernoulli_log_likelihood",
    "bound_from_log_weights",
    "elbo_analytic_kl",
    "elbo_single_sample",
    "gaussian_log_density",
    "gaussian_log_density_full",
    "gaussian_log_density_std",
    "importance_weighted_bound",
    "log_importance_weight",
    "kl_estimate_std",
    "kl_per_dimension",
    "kl_to_standard_normal",
    "log_mean_exp",
    "reparameterize",
    "standard_normal_log_density",
    "vae_elbo",
    "vae_log_weights",
]

LOG_2PI = math.log(2.0 * math.pi)


def _same_shape(a: jax.Array, b: jax.Array, what_a: str, what_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{what_a} has shape {tuple(a.shape)} but {what_b} has shape "
            f"{tuple(b.shape)}; they must match (batch, features)."
        )


def bernoulli_log_likelihood(x: ArrayLike, logits: ArrayLike) -> jax.Array:
    """log p(x|z) = sum_d [x_d log s_d + (1 - x_d) log(1 - s_d)], s = sigmoid(logits).

    Computed stably as sum_d [x_d * l_d - softplus(l_d)]. It is a normalised likelihood
    only for binary x; for grey x in [0, 1] it is the binary cross-entropy, which the
    series names as such (notebook 02). The values of x are not checked here, so the
    function behaves the same inside and outside ``jax.jit``: the host-side entry points
    (:func:`vae_lib.data.to_float`, :func:`vae_lib.data.check_images`, ``fit``,
    ``evaluate``) reject pixels outside [0, 1]. Shapes are checked.

    Args:
        x: pixels (..., D) in [0, 1].
        logits: the decoder's output, the same shape as x.

    Returns:
        One value per example, shape ``x.shape[:-1]``.
    """
    x = jnp.asarray(x)
    logits = jnp.asarray(logits)
    _same_shape(x, logits, "x", "logits")
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


# Gaussian log-densities, one family: the diagonal one with a log-variance (what the encoder
# outputs), the same with a standard deviation, the standard normal (the prior), and one
# with a full covariance matrix (the linear-Gaussian model of notebook 02).


def gaussian_log_density(z: ArrayLike, mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))), summed over the last axis: one value per example."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + (z - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def gaussian_log_density_std(x: ArrayLike, mean: ArrayLike, std: ArrayLike) -> jax.Array:
    """log N(x; mean, diag(std^2)) of one draw ``x`` of any shape, summed over all its elements.

    :func:`gaussian_log_density` with ``logvar = 2 log std`` on the flattened arrays. Its
    gradient in (mean, std) is the score that the score-function estimator multiplies by
    the cost (:mod:`vae_lib.estimators`).
    """
    return gaussian_log_density(jnp.ravel(x), jnp.ravel(mean), jnp.ravel(2.0 * jnp.log(std)))


def standard_normal_log_density(z: ArrayLike) -> jax.Array:
    """log p(z) for the prior p(z) = N(0, I), summed over the last axis."""
    return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def gaussian_log_density_full(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> jax.Array:
    """log N(x; mean, cov) for a full covariance matrix (K, K); x of shape (K,) or (N, K)."""
    x, mean, cov = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(cov)
    d = x.shape[-1]
    chol = jnp.linalg.cholesky(cov)
    sol = jax.scipy.linalg.solve_triangular(chol, (x - mean).T, lower=True)
    return -0.5 * (d * LOG_2PI + 2 * jnp.sum(jnp.log(jnp.diag(chol))) + jnp.sum(sol**2, axis=0))


def kl_per_dimension(mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """The closed-form KL of each latent dimension, not summed: shape of `mean`.

    KL_j = 1/2 [exp(logvar_j) + mean_j^2 - 1 - logvar_j]; a dimension with KL_j near 0 for
    every x carries no information about x (notebook 06: posterior collapse).
    """
    mean, logvar = jnp.asarray(mean), jnp.asarray(logvar)
    return 0.5 * (jnp.exp(logvar) + mean**2 - 1.0 - logvar)


def kl_to_standard_normal(mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in closed form, summed over the last axis.

    KL = 1/2 sum_j [exp(logvar_j) + mean_j^2 - 1 - logvar_j]  (Kingma & Welling 2013, App. B).
    """
    return jnp.sum(kl_per_dimension(mean, logvar), axis=-1)


def kl_estimate_std(mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """Standard deviation of the one-sample KL estimate log q(z|x) - log p(z), z ~ q(z|x).

    With q = N(mu, diag(s^2)) and p = N(0, I) the estimate is a sum over latent dimensions
    of independent terms, each with variance (s_j^2 - 1)^2 / 2 + mu_j^2 s_j^2, so

        sd = sqrt(sum_j [(s_j^2 - 1)^2 / 2 + mu_j^2 s_j^2]).

    It is zero only when q is the prior (notebook 02 derives and measures it).
    """
    var = jnp.exp(logvar)
    return jnp.sqrt(jnp.sum(0.5 * (var - 1.0) ** 2 + jnp.square(mean) * var, axis=-1))


def reparameterize(key: jax.Array, mean: jax.Array, logvar: ArrayLike) -> jax.Array:
    """z = g_phi(x, eps) = mean + exp(logvar / 2) * eps, eps ~ p(eps) = N(0, I).

    The note's eqs. 12 and 20-21 (its eq. 12 lists phi twice: g depends on x and eps,
    with phi as its parameters). The sample is differentiable in mean and logvar.
    """
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps


def elbo_single_sample(x: ArrayLike, logits: ArrayLike, z: ArrayLike, mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """One-sample Monte Carlo ELBO: log p(x|z) + log p(z) - log q(z|x), with z ~ q(z|x).

    The note's eq. 22 corrected: the note drops log p(z). Its expectation over z is the
    ELBO E_q[log p(x, z) - log q(z|x)] (eq. 4, corrected).
    """
    return log_importance_weight(bernoulli_log_likelihood(x, logits), z, mean, logvar)


def log_importance_weight(log_px_given_z: ArrayLike, z: ArrayLike, mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """log w = log p(x|z) + log p(z) - log q(z|x): the one-sample ELBO and the log importance weight.

    The one formula behind :func:`elbo_single_sample`, :func:`vae_log_weights` (and so the
    importance-weighted bound), :func:`vae_lib.evaluation.log_likelihood_bound` and the
    "sticking the landing" loss. ``log_px_given_z`` is the decoder's log-likelihood of x at
    z; p(z) is the standard normal prior, q(z|x) the diagonal Gaussian (mean, logvar); the
    Gaussian terms are summed over the last axis, and everything broadcasts.
    """
    return log_px_given_z + standard_normal_log_density(z) - gaussian_log_density(z, mean, logvar)


def elbo_analytic_kl(x: ArrayLike, logits: ArrayLike, mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """ELBO estimate log p(x|z) - KL(q(z|x) || p(z)), z ~ q(z|x), the KL in closed form.

    The note's eq. 2 corrected (with the expectation over q taken by one sample of z for
    the reconstruction term): the same expectation as :func:`elbo_single_sample`. Its
    variance is often lower, but not always: the one-sample KL term can cancel part of the
    reconstruction term's noise, and on notebook 02's trained VAE the single-sample
    estimate is the less noisy one (notebook 02 measures both).
    """
    return bernoulli_log_likelihood(x, logits) - kl_to_standard_normal(mean, logvar)


def log_mean_exp(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """log (1/k sum_i exp(log_w_i)) along `axis`, computed stably with logsumexp."""
    k = log_w.shape[axis]
    return jax.scipy.special.logsumexp(log_w, axis=axis) - math.log(k)


def vae_elbo(model: nnx.Module, x: ArrayLike, key: jax.Array, analytic_kl: bool = True) -> dict[str, jax.Array]:
    """Per-example ELBO estimate of a :class:`vae_lib.models.VAE` with one z per example.

    Returns a dict of arrays of shape (batch,): ``elbo``, ``log_px_given_z`` (the
    reconstruction term) and ``kl`` (the closed-form KL, or its one-sample estimate
    log q(z|x) - log p(z) when ``analytic_kl`` is False).
    """
    logits, z, mean, logvar = model(x, key)
    rec = bernoulli_log_likelihood(x, logits)
    if analytic_kl:
        kl = kl_to_standard_normal(mean, logvar)
    else:
        kl = gaussian_log_density(z, mean, logvar) - standard_normal_log_density(z)
    return {"elbo": rec - kl, "log_px_given_z": rec, "kl": kl}


def vae_log_weights(model: nnx.Module, x: ArrayLike, key: jax.Array, k: int) -> jax.Array:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for k samples z_i ~ q(z|x): (k, batch)."""
    mean, logvar = model.encoder(x)
    keys = jax.random.split(key, k)

    def one(kk):
        z = reparameterize(kk, mean, logvar)
        return elbo_single_sample(x, model.decoder(z), z, mean, logvar)

    return jax.lax.map(one, keys)


def bound_from_log_weights(log_w: jax.Array, k: int) -> jax.Array:
    """L_k per example from K log-weights (K, N), regrouped into K // k disjoint groups of k.

    Group g holds draws g*k .. g*k + k - 1; each group gives one estimate log (1/k) sum_i w_i
    and the groups' mean is returned, shape (N,). With k = K it is
    :func:`importance_weighted_bound` on those draws; with k = 1 the single-sample ELBO
    averaged over the K draws. Draws past the last full group are not used.
    """
    log_w = jnp.asarray(log_w)
    groups = log_w.shape[0] // k
    if groups == 0:
        raise ValueError(f"k = {k} is larger than the {log_w.shape[0]} log-weights given (axis 0).")
    regrouped = log_w[: groups * k].reshape(groups, k, *log_w.shape[1:])
    return jnp.mean(log_mean_exp(regrouped, axis=1), axis=0)


def bernoulli_log_integral(logits: ArrayLike) -> jax.Array:
    """log of the integral over grey x in [0, 1] of the Bernoulli formula exp(x l - softplus(l)).

    For binary x the formula sums to 1 over x in {0, 1}; over the interval [0, 1] it
    integrates to (e^l - 1) / (l (1 + e^l)) = tanh(l / 2) / l (1/2 at l = 0), never more
    than 1/2. It is the reciprocal of the continuous Bernoulli's normalising constant
    (Loaiza-Ganem & Cunningham 2019). Elementwise; computed stably as
    log tanh(|l| / 2) - log |l|, and for |l| < 1e-4 by its series
    log(1/2) - l^2 / 12 (tanh(l/2) / l = 1/2 - l^2 / 24 + ..., whose log starts -l^2 / 12).
    """
    a = jnp.abs(jnp.asarray(logits))
    small = a < 1e-4
    safe = jnp.where(small, 1.0, a)
    return jnp.where(small, jnp.log(0.5) - a**2 / 12.0, jnp.log(jnp.tanh(safe / 2.0)) - jnp.log(safe))


def bernoulli_entropy(p: ArrayLike) -> jax.Array:
    """sum_d H(p_d), H(p) = -p log p - (1 - p) log(1 - p): per example, summed over the last axis.

    For dynamically binarized images with grey levels p this is the smallest expected
    -log p(x) any model can reach (the cross-entropy is never below the entropy): the
    floor under every loss the series reports (notebooks 01 and 05).
    """
    p = jnp.asarray(p)
    return jnp.sum(jax.scipy.special.entr(p) + jax.scipy.special.entr(1 - p), axis=-1)


def importance_weighted_bound(model: nnx.Module, x: ArrayLike, key: jax.Array, k: int) -> jax.Array:
    """The k-sample importance-weighted bound (Burda et al. 2016), per example.

    L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x) independently.
    L_1 is the ELBO; L_k rises with k and tends to log p(x), so with large k it is the
    standard estimate of the log-likelihood of a VAE.
    """
    return log_mean_exp(vae_log_weights(model, x, key, k), axis=0)
