"""Monte Carlo estimators of the gradient of an expectation: score function and pathwise.

The problem (the lecture note's eqs. 10-11): estimate ``grad_phi E_{q_phi(z)}[f(z)]`` when
the distribution itself depends on phi, so the gradient cannot simply be moved inside the
expectation. Two unbiased estimators exist:

* **score function** (log-derivative trick, REINFORCE; the note never names it):
  ``grad_phi q_phi(z) = q_phi(z) grad_phi log q_phi(z)`` gives
  ``grad_phi E_q[f(z)] = E_q[(f(z) - b) grad_phi log q_phi(z)]`` for any constant b (the
  baseline: ``E_q[grad_phi log q_phi] = 0``). Needs only values of f.
* **pathwise** (reparameterization trick, the note's eqs. 12-16 corrected): write
  ``z = g_phi(eps) = mean + std * eps`` with ``eps ~ N(0, I)`` free of phi, then
  ``grad_phi E_q[f(z)] = E_eps[grad_phi f(g_phi(eps))]``. Needs f differentiable.

Functions here, one idea each:

* :func:`score_function_samples`, :func:`pathwise_samples`: the two estimators for a
  diagonal Gaussian N(mean, diag(std^2)) and any scalar cost f. Each returns
  ``(d_mean, d_std)`` with one single-sample estimate per row, so the mean of the rows is
  the Monte Carlo gradient and their variance is the estimator's variance.
* :func:`gaussian_quadratic_variances` (with :func:`gaussian_quadratic_expectation`,
  :func:`gaussian_quadratic_gradients`, :func:`gaussian_quadratic_optimal_baselines`): the
  exact variances for the setup of Mohamed, Rosca, Figurnov & Mnih (JMLR 2020, Fig. 2),
  x ~ N(mu, sigma^2) and f(x) = (x - k)^2, extended to x in R^D with f = sum_d (x_d - k)^2.
  The derivation is in notebook 03.
* :func:`vae_encoder_grads`: estimates of the ELBO's gradient with respect to the encoder's
  parameters, one flattened vector per row: the gradient of any loss of
  :mod:`vae_lib.losses` (``pathwise_loss``, ``score_function_loss``,
  ``sticking_the_landing_loss``, ``leave_one_out_score_loss``: each estimator is a loss whose
  gradient it is);
  :func:`vae_encoder_grad_moments`: their per-parameter mean and variance, streamed (for
  many samples of a big encoder); :func:`row_moments` and :func:`gradient_summary`: total
  variance and signal-to-noise ratio.

Equation numbers refer to the lecture note (shared/seeds/000_303b5e48acb7a591.txt).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from vae_lib.data import check_images
from vae_lib.losses import pathwise_loss
from vae_lib.objectives import (
    bernoulli_log_likelihood,
    gaussian_log_density_std,
    reparameterize,
)

__all__ = [
    "gaussian_quadratic_expectation",
    "gaussian_quadratic_gradients",
    "gaussian_quadratic_optimal_baselines",
    "gaussian_quadratic_variances",
    "gradient_summary",
    "pathwise_samples",
    "reconstruction_grads",
    "row_moments",
    "score_function_samples",
    "vae_encoder_grad_moments",
    "vae_encoder_grads",
    "variance_and_se",
]


# --------------------------------------------------------------------------------------
# A diagonal Gaussian and any scalar cost
# --------------------------------------------------------------------------------------


def _mean_std(mean: ArrayLike, std: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Host-side checks of the Gaussian's parameters (these functions are called outside jit)."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    if mean.shape != std.shape:
        raise ValueError(
            f"mean has shape {tuple(mean.shape)} but std has shape {tuple(std.shape)}; they must be the same."
        )
    if std.size and not bool(jnp.all(std > 0)):
        raise ValueError("std must be positive everywhere (it is a standard deviation, not a log-variance).")
    return mean, std


def _check_cost(f: Callable, mean) -> None:
    out = jax.eval_shape(f, jax.ShapeDtypeStruct(mean.shape, mean.dtype))
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"f must return a scalar for one x of shape {tuple(mean.shape)}; it "
            f"returned shape {getattr(out, 'shape', None)}. Sum over the "
            f"dimensions of x inside f."
        )


def _noise(key, mean, num_samples):
    """eps ~ N(0, I) of shape (num_samples, *mean.shape): row i drives sample i."""
    return jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)


def score_function_samples(
    f: Callable, mean: ArrayLike, std: ArrayLike, key: jax.Array, num_samples: int, baseline: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Single-sample score-function (REINFORCE) estimates of grad E[f(x)], x ~ N(mean, diag(std^2)).

    The log-derivative identity grad_theta q_theta(x) = q_theta(x) grad_theta log q_theta(x)
    turns the gradient of the expectation (the note's eq. 10) into an expectation:

        grad_theta E_q[f(x)] = E_q[(f(x) - b) grad_theta log q_theta(x)],   theta in {mean, std},

    for any constant baseline b, because E_q[grad_theta log q_theta(x)] = 0. For the
    Gaussian the scores are (x - mean) / std^2 and ((x - mean)^2 - std^2) / std^3; here they
    come from autodiff of :func:`vae_lib.objectives.gaussian_log_density_std` at a fixed (non-differentiated) x.

    Args:
        f: scalar cost of one x of ``mean``'s shape; it is only evaluated, never
            differentiated, so it may be non-differentiable or even discontinuous. The
            estimator is compiled with ``jax.jit`` for each f (f is hashed by identity):
            define f once and reuse it rather than passing a new lambda every call.
        mean, std: arrays of one shape (std > 0).
        key: a ``jax.random.key``; it draws eps of shape (num_samples, *mean.shape) and
            row i uses x = mean + std * eps[i].
        num_samples: the number of rows.
        baseline: a constant b subtracted from f (a control variate; leaves the mean alone).

    Returns:
        ``(d_mean, d_std)``, each of shape ``(num_samples, *mean.shape)``: row i is one
        single-sample estimate of the gradient with respect to mean and to std.
    """
    mean, std = _mean_std(mean, std)
    _check_cost(f, mean)
    return _score_rows(f, mean, std, key, int(num_samples), jnp.asarray(baseline, jnp.float32))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _score_rows(f, mean, std, key, num_samples, baseline):
    score = jax.grad(gaussian_log_density_std, argnums=(1, 2))

    def one(eps):
        x = jax.lax.stop_gradient(mean + std * eps)  # a fixed draw: no path to (mean, std)
        weight = f(x) - baseline
        d_mean, d_std = score(x, mean, std)
        return weight * d_mean, weight * d_std

    return jax.vmap(one)(_noise(key, mean, num_samples))


def pathwise_samples(
    f: Callable, mean: ArrayLike, std: ArrayLike, key: jax.Array, num_samples: int
) -> tuple[jax.Array, jax.Array]:
    """Single-sample pathwise (reparameterization) estimates of grad E[f(x)], x ~ N(mean, diag(std^2)).

    The note's eqs. 12-16 with g(eps) = mean + std * eps, eps ~ N(0, I): since p(eps) does
    not depend on (mean, std), the gradient moves inside the expectation over eps,

        grad E_q[f(x)] = E_eps[grad f(mean + std * eps)]
                       = E_eps[f'(x)]  (for mean),   E_eps[f'(x) * eps]  (for std).

    ``f`` must be differentiable (it is differentiated by ``jax.grad``). Arguments and
    return value as in :func:`score_function_samples`; for one key the two functions use the
    same eps, so their rows are paired draws (the same x).
    """
    mean, std = _mean_std(mean, std)
    _check_cost(f, mean)
    return _pathwise_rows(f, mean, std, key, int(num_samples))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _pathwise_rows(f, mean, std, key, num_samples):
    def one(eps):
        # x = g(eps) = mean + std * eps: vae_lib.objectives.reparameterize with logvar = 2 log std
        return jax.grad(lambda m, s: f(m + s * eps), argnums=(0, 1))(mean, std)

    return jax.vmap(one)(_noise(key, mean, num_samples))


# --------------------------------------------------------------------------------------
# Exact results for Mohamed et al. (2020), Fig. 2: x ~ N(mu, sigma^2), f(x) = (x - k)^2
# --------------------------------------------------------------------------------------


def gaussian_quadratic_expectation(mu: ArrayLike, sigma: ArrayLike, k: ArrayLike, dim: ArrayLike = 1) -> np.ndarray:
    """E[f(x)] for x ~ N(mu 1, sigma^2 I_D) and f(x) = sum_d (x_d - k)^2: D ((mu - k)^2 + sigma^2)."""
    mu, sigma, k = (np.asarray(v, np.float64) for v in (mu, sigma, k))
    return dim * ((mu - k) ** 2 + sigma**2)


def gaussian_quadratic_gradients(mu: ArrayLike, sigma: ArrayLike, k: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Exact (d/dmu_1, d/dsigma_1) of E[f] above: (2 (mu - k), 2 sigma), for any D."""
    mu, sigma, k = (np.asarray(v, np.float64) for v in (mu, sigma, k))
    return 2.0 * (mu - k), 2.0 * sigma + 0.0 * k


def gaussian_quadratic_variances(
    mu: ArrayLike, sigma: ArrayLike, k: ArrayLike, baseline: ArrayLike = 0.0, dim: ArrayLike = 1
) -> dict[str, np.ndarray]:
    """Exact variances of the single-sample estimators for Mohamed et al. (JMLR 2020), Fig. 2.

    Setup: x ~ N(mu 1, sigma^2 I_D), f(x) = sum_d (x_d - k)^2 (D = ``dim``; D = 1 is the
    paper's). The variances are those of the estimates of d/dmu_1 and d/dsigma_1 (every
    coordinate is alike). With a = mu - k, s = sigma and eps ~ N(0, 1), whose moments are
    E eps^2 = 1, E eps^4 = 3, E eps^6 = 15, E eps^8 = 105 (odd ones 0):

    * pathwise: d/dmu = 2(a + s eps), variance 4 s^2; d/dsigma = 2(a + s eps) eps,
      variance 4 a^2 + 8 s^2;
    * score function with constant baseline b: write f - b = c + 2 a s eps + s^2 eps^2 with
      c = a^2 + R - b, where R = sum_{d>1} (x_d - k)^2 is independent of eps, so
      E c = E[f] - s^2 - b and Var c = (D - 1)(4 a^2 s^2 + 2 s^4). Then
      Var[d/dmu]    = (E[c^2] + 6 s^2 E[c] + 8 a^2 s^2 + 15 s^4) / s^2,
      Var[d/dsigma] = (2 E[c^2] + 20 s^2 E[c] + 40 a^2 s^2 + 74 s^4) / s^2.

    Args broadcast (pass an array of k, of baselines or of dims for a curve).
    Returns a dict of float64 arrays: ``score_mu``, ``score_sigma``, ``pathwise_mu``,
    ``pathwise_sigma``.
    """
    mu, sigma, k, b = (np.asarray(v, np.float64) for v in (mu, sigma, k, baseline))
    if np.any(np.asarray(dim) < 1):
        raise ValueError(f"dim must be at least 1, got {dim}")
    a, s2 = mu - k, sigma**2
    mean_c = gaussian_quadratic_expectation(mu, sigma, k, dim) - s2 - b
    mean_c2 = (dim - 1) * (4 * a**2 * s2 + 2 * s2**2) + mean_c**2
    out = {
        "score_mu": (mean_c2 + 6 * s2 * mean_c + 8 * a**2 * s2 + 15 * s2**2) / s2,
        "score_sigma": (2 * mean_c2 + 20 * s2 * mean_c + 40 * a**2 * s2 + 74 * s2**2) / s2,
        "pathwise_mu": 4 * s2,
        "pathwise_sigma": 4 * a**2 + 8 * s2,
    }
    shape = np.broadcast_shapes(mu.shape, sigma.shape, k.shape, b.shape, np.shape(dim))
    return {name: np.broadcast_to(v, shape) for name, v in out.items()}


def gaussian_quadratic_optimal_baselines(
    mu: ArrayLike, sigma: ArrayLike, k: ArrayLike, dim: ArrayLike = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The constant baselines that minimise the score-function variances above.

    Each variance is a parabola in b with its minimum where E[c] = -3 s^2 (for mu) and
    E[c] = -5 s^2 (for sigma), i.e. b = E[f] + 2 sigma^2 and b = E[f] + 4 sigma^2. (In general
    b* = E[f s^2] / E[s^2] for the score s, Mohamed et al. 2020, sec. 7.4.) Returns
    ``(b_mu, b_sigma)``.
    """
    ef = gaussian_quadratic_expectation(mu, sigma, k, dim)
    s2 = np.asarray(sigma, np.float64) ** 2
    return ef + 2 * s2, ef + 4 * s2


# --------------------------------------------------------------------------------------
# The VAE: gradients of the ELBO with respect to the encoder's parameters phi
# --------------------------------------------------------------------------------------


def _row_function(params, graphdef, x, loss_fn):
    """key -> one flattened estimate of grad_phi of the batch-mean ELBO: minus the loss's gradient."""

    def row(k):
        grads, _ = jax.grad(loss_fn, has_aux=True)(params, graphdef, x, k)
        return -ravel_pytree(grads["encoder"])[0]  # gradient of the ELBO = minus the loss's

    return row


_STATIC = ("graphdef", "num_samples", "loss_fn", "chunk_size")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _encoder_grad_rows(params, x, key, *, graphdef, num_samples, loss_fn, chunk_size):
    row = _row_function(params, graphdef, x, loss_fn)
    return jax.lax.map(row, jax.random.split(key, num_samples), batch_size=chunk_size)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _encoder_grad_moments(params, x, key, *, graphdef, num_samples, loss_fn, chunk_size):
    row = _row_function(params, graphdef, x, loss_fn)
    keys = jax.random.split(key, num_samples).reshape(num_samples // chunk_size, chunk_size)
    zeros = jnp.zeros_like(ravel_pytree(params["encoder"])[0])

    def merge(carry, chunk_keys):
        # Chan et al.'s pairwise update of (count, mean, sum of squared deviations).
        count, mean, m2 = carry
        g = jax.vmap(row)(chunk_keys)
        g_mean = jnp.mean(g, axis=0)
        delta = g_mean - mean
        total = count + chunk_size
        mean = mean + delta * (chunk_size / total)
        m2 = m2 + jnp.sum((g - g_mean) ** 2, axis=0) + delta**2 * (count * chunk_size / total)
        return (total, mean, m2), None

    (_, mean, m2), _ = jax.lax.scan(merge, (jnp.zeros(()), zeros, zeros), keys)
    return mean, m2 / (num_samples - 1)


def _vae_args(model: nnx.Module, x: ArrayLike, num_samples: int, loss_fn: Callable, chunk_size) -> dict:
    """Check the arguments of the two functions below; return the keyword arguments of the
    compiled functions (everything but params, x and key)."""
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a loss function such as losses.pathwise_loss or "
            f"functools.partial(losses.score_function_loss, baseline='batch'); got {loss_fn!r}."
        )
    if np.ndim(x) != 2:
        raise ValueError(f"x must be a batch of shape (B, D); got {np.shape(x)}. For one example pass x[i:i + 1].")
    if np.asarray(x).dtype == np.uint8:
        raise ValueError("x must be float pixels in [0, 1] (binarized or not); scale uint8 images with data.to_float.")
    check_images(x, "the gradient estimators")
    num_samples = int(num_samples)
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2; got {num_samples}.")
    if chunk_size is not None:
        chunk_size = min(int(chunk_size), num_samples)
    graphdef = nnx.graphdef(model)
    return dict(graphdef=graphdef, num_samples=num_samples, loss_fn=loss_fn, chunk_size=chunk_size)


def vae_encoder_grads(
    model: nnx.Module,
    x: ArrayLike,
    key: jax.Array,
    num_samples: int,
    loss_fn: Callable = pathwise_loss,
    chunk_size: int | None = 32,
) -> jax.Array:
    """Independent estimates of grad_phi ELBO for a VAE's encoder, one flattened vector per row.

    The quantity estimated is the gradient, with respect to the encoder's parameters phi,
    of the mean over the examples of ``x`` of the ELBO E_q[log p(x|z)] - KL (closed-form KL):
    the gradient one SGD step on this batch follows. Each row draws fresh z's for every
    example (row i uses ``jax.random.split(key, num_samples)[i]``); x itself is fixed (pass
    it already binarized). Pass one example, shape (1, 784), for the per-example gradient.

    Args:
        model: a :class:`vae_lib.models.VAE` (not modified).
        x: float images (B, D) in [0, 1].
        num_samples: the number of rows (independent estimates).
        loss_fn: the loss whose encoder gradient is the estimator, with the signature of
            :func:`vae_lib.losses.vae_loss`: :func:`vae_lib.losses.pathwise_loss` (the
            reparameterized gradient; with one sample per image it is ``vae_loss``),
            ``functools.partial(losses.score_function_loss, baseline=...)``,
            :func:`vae_lib.losses.sticking_the_landing_loss` or
            ``functools.partial(losses.leave_one_out_score_loss, num_samples=K)``. It is a
            static argument of the compiled function: pass the same object again to reuse it.
        chunk_size: rows computed together (``jax.lax.map``'s batch_size); smaller uses less
            memory.

    Returns:
        float32 array (num_samples, P), P the number of encoder parameters, in the order of
        ``jax.flatten_util.ravel_pytree(nnx.state(model.encoder))``. It holds
        num_samples * P floats (330,040 parameters for the 784-400-20 VAE); for many samples
        of a big encoder use :func:`vae_encoder_grad_moments`, which keeps only two vectors.
    """
    kwargs = _vae_args(model, x, num_samples, loss_fn, chunk_size)
    return _encoder_grad_rows(nnx.state(model), jnp.asarray(x, jnp.float32), key, **kwargs)


def vae_encoder_grad_moments(
    model: nnx.Module,
    x: ArrayLike,
    key: jax.Array,
    num_samples: int,
    loss_fn: Callable = pathwise_loss,
    chunk_size: int = 16,
) -> dict:
    """Per-parameter mean and variance of the rows of :func:`vae_encoder_grads`, streamed.

    Same arguments and the same draws (for the same key) as :func:`vae_encoder_grads`, but
    the rows are reduced ``chunk_size`` at a time, so memory holds a few vectors of P floats
    instead of num_samples of them. ``num_samples`` must be a multiple of ``chunk_size``.

    Returns:
        A dict: ``mean`` (P,) (the Monte Carlo gradient), ``variance`` (P,) (of one
        estimate, a row, ddof=1) and ``num_samples``; :func:`gradient_summary`
        reduces it.
    """
    kwargs = _vae_args(model, x, num_samples, loss_fn, chunk_size)
    if kwargs["num_samples"] % kwargs["chunk_size"]:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of chunk_size ({kwargs['chunk_size']}).")
    mean, variance = _encoder_grad_moments(nnx.state(model), jnp.asarray(x, jnp.float32), key, **kwargs)
    return {"mean": mean, "variance": variance, "num_samples": kwargs["num_samples"]}


@functools.partial(jax.jit, static_argnames=("graphdef", "reparameterized"))
def _reconstruction_grads(params, x, key, *, graphdef, reparameterized):
    def term(p):
        model = nnx.merge(graphdef, p)
        mean, logvar = model.encoder(x)
        z = reparameterize(key, mean, logvar)
        if not reparameterized:
            z = jax.lax.stop_gradient(z)  # the sample as a plain number: no path back to mean, logvar
        return jnp.mean(bernoulli_log_likelihood(x, model.decoder(z)))

    return jax.grad(term)(params)


def reconstruction_grads(model: nnx.Module, x: ArrayLike, key: jax.Array, reparameterized: bool) -> nnx.State:
    """Gradient of the batch-mean reconstruction term log p(x|z), z ~ q(z|x), in all parameters.

    With ``reparameterized`` the sample z = mean + std * eps is differentiated through; without
    it z is held fixed (``stop_gradient``), the note's Figure 2 left panel: the encoder's
    gradient is then exactly zero and the decoder's is unchanged (notebook 02).

    Returns:
        The gradient as an ``nnx.State`` of the model's shape (``["encoder"]``, ``["decoder"]``).
    """
    check_images(x, "reconstruction_grads")
    graphdef, params = nnx.split(model)
    return _reconstruction_grads(
        params, jnp.asarray(x, jnp.float32), key, graphdef=graphdef, reparameterized=bool(reparameterized)
    )


def variance_and_se(g: ArrayLike) -> tuple[float, float]:
    """The variance of samples g (in float64) and its standard error, sqrt((m4 - var^2) / n).

    m4 is the fourth central moment; the formula is the large-n standard error of the
    sample variance, used to say whether a measured variance agrees with an exact one.
    """
    g = np.asarray(g, np.float64)
    v = g.var()
    return float(v), float(np.sqrt((np.mean((g - g.mean()) ** 4) - v**2) / len(g)))


def row_moments(rows: ArrayLike) -> dict:
    """The dict of :func:`vae_encoder_grad_moments` for rows already in memory (num_samples, P)."""
    rows = jnp.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise ValueError(f"rows must have shape (num_samples >= 2, P); got {tuple(rows.shape)}.")
    return {"mean": jnp.mean(rows, axis=0), "variance": jnp.var(rows, axis=0, ddof=1), "num_samples": rows.shape[0]}


def gradient_summary(moments: dict, signal_norm: float | None = None) -> dict:
    """Total variance and signal-to-noise ratio of a single-sample gradient estimator g.

    ``moments`` is the dict of :func:`vae_encoder_grad_moments` or :func:`row_moments`.
    Returns a dict of floats:

    * ``total_variance``: tr Cov[g] = E||g - E g||^2, the sum of per-parameter variances;
    * ``signal_norm``: ||E g||, the norm of the true gradient. Estimated from the moments
      with the upward bias of ||mean||^2 removed (E||mean||^2 = ||E g||^2 + tr Cov / n), unless
      given: unbiased estimators share E g, so the norm measured with a low-variance one
      (the pathwise) can be passed here for a noisy one;
    * ``snr``: ||E g|| / sqrt(tr Cov[g]): above 1 a single-sample gradient points mostly
      along the true gradient, below 1 it is mostly noise.
    """
    mean, variance, n = moments["mean"], moments["variance"], moments["num_samples"]
    total_variance = float(jnp.sum(variance))
    if signal_norm is None:
        signal_norm = max(float(jnp.sum(mean**2)) - total_variance / n, 0.0) ** 0.5
    snr = signal_norm / total_variance**0.5 if total_variance > 0 else float("inf")
    return {"total_variance": total_variance, "signal_norm": float(signal_norm), "snr": snr}
