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
import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _same_shape(a, b, what_a: str, what_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{what_a} has shape {tuple(a.shape)} but {what_b} has shape "
            f"{tuple(b.shape)}; they must match (batch, features)."
        )


def bernoulli_log_likelihood(x, logits):
    """log p(x|z) = sum_d [x_d log s_d + (1 - x_d) log(1 - s_d)], s = sigmoid(logits).

    Computed stably as sum_d [x_d * l_d - softplus(l_d)]. It is a normalised likelihood
    only for binary x; for grey x in [0, 1] it is the binary cross-entropy, which the
    series names as such (notebook 02). Values of x outside [0, 1] are rejected.
    Returns one value per example (shape x.shape[:-1]).
    """
    if _is_concrete(x) and np.size(x):  # checked on the host; inside jit x is abstract
        x_host = np.asarray(x)
        lo, hi = float(x_host.min()), float(x_host.max())
        if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
            raise ValueError(
                f"The Bernoulli likelihood needs pixels in [0, 1]; got values in "
                f"[{lo:g}, {hi:g}]. Scale uint8 images with vae_lib.data.to_float "
                f"(divide by 255) and binarize them if you want a true Bernoulli "
                f"likelihood."
            )
    x = jnp.asarray(x)
    logits = jnp.asarray(logits)
    _same_shape(x, logits, "x", "logits")
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def gaussian_log_density(z, mean, logvar):
    """log N(z; mean, diag(exp(logvar))) summed over the last axis."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + (z - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def standard_normal_log_density(z):
    """log p(z) for the prior p(z) = N(0, I), summed over the last axis."""
    return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def kl_to_standard_normal(mean, logvar):
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in closed form, summed over the last axis.

    KL = 1/2 sum_j [exp(logvar_j) + mean_j^2 - 1 - logvar_j]  (Kingma & Welling 2013, App. B).
    """
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def reparameterize(key, mean, logvar):
    """z = g_phi(x, eps) = mean + exp(logvar / 2) * eps, eps ~ p(eps) = N(0, I).

    The note's eqs. 12 and 20-21 (its eq. 12 lists phi twice: g depends on x and eps,
    with phi as its parameters). The sample is differentiable in mean and logvar.
    """
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps


def elbo_single_sample(x, logits, z, mean, logvar):
    """One-sample Monte Carlo ELBO: log p(x|z) + log p(z) - log q(z|x), with z ~ q(z|x).

    The note's eq. 22 corrected: the note drops log p(z). Its expectation over z is the
    ELBO E_q[log p(x, z) - log q(z|x)] (eq. 4, corrected).
    """
    return bernoulli_log_likelihood(x, logits) + standard_normal_log_density(z) - gaussian_log_density(z, mean, logvar)


def elbo_analytic_kl(x, logits, mean, logvar):
    """ELBO estimate log p(x|z) - KL(q(z|x) || p(z)), z ~ q(z|x), the KL in closed form.

    The note's eq. 2 corrected (with the expectation over q taken by one sample of z for
    the reconstruction term): same expectation as :func:`elbo_single_sample`, lower variance.
    """
    return bernoulli_log_likelihood(x, logits) - kl_to_standard_normal(mean, logvar)


def log_mean_exp(log_w, axis: int = 0):
    """log (1/k sum_i exp(log_w_i)) along `axis`, computed stably with logsumexp."""
    k = log_w.shape[axis]
    return jax.scipy.special.logsumexp(log_w, axis=axis) - math.log(k)


def vae_elbo(model, x, key, analytic_kl: bool = True):
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


def vae_log_weights(model, x, key, k: int):
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for k samples z_i ~ q(z|x): (k, batch)."""
    mean, logvar = model.encoder(x)
    keys = jax.random.split(key, k)

    def one(kk):
        z = reparameterize(kk, mean, logvar)
        return (
            bernoulli_log_likelihood(x, model.decoder(z))
            + standard_normal_log_density(z)
            - gaussian_log_density(z, mean, logvar)
        )

    return jax.lax.map(one, keys)


def importance_weighted_bound(model, x, key, k: int):
    """The k-sample importance-weighted bound (Burda et al. 2016), per example.

    L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x) independently.
    L_1 is the ELBO; L_k rises with k and tends to log p(x), so with large k it is the
    standard estimate of the log-likelihood of a VAE.
    """
    return log_mean_exp(vae_log_weights(model, x, key, k), axis=0)
