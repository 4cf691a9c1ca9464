"""A latent-variable model where everything is exact: the linear-Gaussian model.

    p(z) = N(0, I_J),   p(x|z) = N(W z + b, s2 I_D)

Then p(x) = N(b, W W^T + s2 I) and the posterior p(z|x) = N(m*, S*) with
S* = (I + W^T W / s2)^-1 and m* = S* W^T (x - b) / s2. For a Gaussian q(z) = N(m, S)
the ELBO is closed-form too, so log p(x) - ELBO = KL(q || p(z|x)) can be checked to
floating-point precision (notebook 02 and tests/test_objectives.py).

Covariances here are full matrices (J x J): the model is small, the point is exactness.
Functions take one x of shape (D,).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vae_lib.objectives import LOG_2PI, gaussian_log_density_full

__all__ = [
    "LinearGaussian",
    "average_log_marginal",
    "best_diagonal_q",
    "elbo",
    "elbo_without_prior",
    "eq4_maximiser",
    "gaussian_entropy",
    "kl_gaussians",
    "log_joint",
    "log_joint_without_prior",
    "log_marginal",
    "log_weights",
    "posterior",
    "random_model",
    "sample_x",
]


class LinearGaussian(NamedTuple):
    W: jax.Array  # (D, J): J latent dimensions
    b: jax.Array  # (D,)
    s2: float  # observation noise variance


def random_model(key: jax.Array, dim_x: int = 5, dim_z: int = 2, s2: float = 0.5) -> LinearGaussian:
    """A random instance (weights ~ N(0, 1), bias ~ N(0, 1))."""
    kw, kb = jax.random.split(key)
    return LinearGaussian(jax.random.normal(kw, (dim_x, dim_z)), jax.random.normal(kb, (dim_x,)), s2)


def sample_x(model: LinearGaussian, key: jax.Array, num: int) -> jax.Array:
    """Draw `num` data points from the model: (num, D)."""
    kz, kx = jax.random.split(key)
    z = jax.random.normal(kz, (num, model.W.shape[1]))
    return z @ model.W.T + model.b + jnp.sqrt(model.s2) * jax.random.normal(kx, (num, model.W.shape[0]))


def log_marginal(model: LinearGaussian, x: ArrayLike) -> jax.Array:
    """Exact log p(x) = log N(x; b, W W^T + s2 I)."""
    d = model.W.shape[0]
    return gaussian_log_density_full(x, model.b, model.W @ model.W.T + model.s2 * jnp.eye(d))


def posterior(model: LinearGaussian, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Exact posterior p(z|x) = N(m*, S*): returns (m*, S*)."""
    k = model.W.shape[1]
    cov = jnp.linalg.inv(jnp.eye(k) + model.W.T @ model.W / model.s2)
    return cov @ model.W.T @ (x - model.b) / model.s2, cov


def best_diagonal_q(model: LinearGaussian, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """The diagonal Gaussian q = N(m, S) with the highest ELBO: returns (m, S), S diagonal.

    With the posterior N(m*, S*) and its precision Lambda = S*^-1, the best diagonal q has
    m = m* and S_jj = 1 / Lambda_jj (mean-field; Bishop, PRML section 10.1.2): its variances are
    below the posterior's marginal variances whenever the posterior is correlated. Its gap
    log p(x) - ELBO = KL(q || posterior) = 1/2 (sum_j log Lambda_jj - log det Lambda) is the
    approximation gap of diagonal Gaussians (-1/2 log(1 - rho^2) in two dimensions).
    """
    m_post, s_post = posterior(model, x)
    return m_post, jnp.diag(1.0 / jnp.diag(jnp.linalg.inv(s_post)))


def log_joint(model: LinearGaussian, x: ArrayLike, z: ArrayLike) -> jax.Array:
    """log p(x, z) = log p(x|z) + log p(z) for one z (J,) or a batch (..., J)."""
    resid = x - (z @ model.W.T + model.b)
    d, k = model.W.shape
    log_lik = -0.5 * (d * (LOG_2PI + jnp.log(model.s2)) + jnp.sum(resid**2, -1) / model.s2)
    return log_lik - 0.5 * (k * LOG_2PI + jnp.sum(z**2, -1))


def log_joint_without_prior(model: LinearGaussian, x: ArrayLike, z: ArrayLike) -> jax.Array:
    """log p(x|z) alone: what the note's eqs. 3, 4 and 22 put where log p(x, z) belongs."""
    k = model.W.shape[1]
    return log_joint(model, x, z) + 0.5 * (k * LOG_2PI + jnp.sum(z**2, -1))


def gaussian_entropy(cov: ArrayLike) -> jax.Array:
    """Entropy of N(m, cov): H = 1/2 log det(2 pi e cov)."""
    k = cov.shape[-1]
    return 0.5 * (k * (LOG_2PI + 1.0) + jnp.linalg.slogdet(cov)[1])


def elbo(model: LinearGaussian, x: ArrayLike, m: ArrayLike, S: ArrayLike) -> jax.Array:
    """Exact ELBO E_q[log p(x, z)] + H[q] for q = N(m, S)  (corrected eq. 4).

    E_q[log p(x|z)] = log N(x; W m + b, s2 I) - tr(W^T W S) / (2 s2), and
    E_q[log p(z)] = -1/2 (J log 2 pi + m^T m + tr S).
    """
    d, k = model.W.shape
    resid = x - (model.W @ m + model.b)
    e_lik = (
        -0.5 * (d * (LOG_2PI + jnp.log(model.s2)) + resid @ resid / model.s2)
        - 0.5 * jnp.trace(model.W.T @ model.W @ S) / model.s2
    )
    e_prior = -0.5 * (k * LOG_2PI + m @ m + jnp.trace(S))
    return e_lik + e_prior + gaussian_entropy(S)


def elbo_without_prior(model: LinearGaussian, x: ArrayLike, m: ArrayLike, S: ArrayLike) -> jax.Array:
    """E_q[log p(x|z)] + H[q]: the note's eq. 4 as written (log p(z) dropped). Not a bound."""
    k = model.W.shape[1]
    return elbo(model, x, m, S) + 0.5 * (k * LOG_2PI + m @ m + jnp.trace(S))


def eq4_maximiser(model: LinearGaussian, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The q = N(m, S) that maximises the note's eq. 4 as written (:func:`elbo_without_prior`).

    Without log p(z) the objective is E_q[log p(x|z)] + H[q], the ELBO under a flat prior,
    so its maximiser is the flat-prior posterior: the least-squares mean
    m = (W^T W)^-1 W^T (x - b) and S = s2 (W^T W)^-1 (W must have full column rank).
    """
    wtw = model.W.T @ model.W
    return jnp.linalg.solve(wtw, model.W.T @ (x - model.b)), model.s2 * jnp.linalg.inv(wtw)


def average_log_marginal(model: LinearGaussian, xs: jax.Array) -> jax.Array:
    """The mean of log p(x) over a data set xs (N, D): what maximum likelihood maximises."""
    return jnp.mean(jax.vmap(lambda x: log_marginal(model, x))(xs))


def kl_gaussians(m0: ArrayLike, S0: ArrayLike, m1: ArrayLike, S1: ArrayLike) -> jax.Array:
    """KL(N(m0, S0) || N(m1, S1)) for full covariances."""
    k = m0.shape[-1]
    S1_inv = jnp.linalg.inv(S1)
    diff = m1 - m0
    return 0.5 * (
        jnp.trace(S1_inv @ S0) + diff @ S1_inv @ diff - k + jnp.linalg.slogdet(S1)[1] - jnp.linalg.slogdet(S0)[1]
    )


def log_weights(model: LinearGaussian, x: ArrayLike, m: ArrayLike, S: ArrayLike, key: jax.Array, k: int) -> jax.Array:
    """k importance log-weights log p(x, z_i) - log q(z_i), z_i ~ q = N(m, S): shape (k,)."""
    chol = jnp.linalg.cholesky(S)
    z = m + jax.random.normal(key, (k, m.shape[0])) @ chol.T
    return log_joint(model, x, z) - gaussian_log_density_full(z, m, S)
