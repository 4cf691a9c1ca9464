"""Training losses: one function each, the signature every training step calls.

    loss_fn(params, graphdef, x, key) -> (loss, metrics)

``params`` and ``graphdef`` are the two halves of ``nnx.split(model)``; ``x`` is a batch of
float images (B, D) in [0, 1] (binarized or not, as the caller chose); ``key`` drives the
sampling of z. ``loss`` is a scalar, the mean over the batch of a per-example loss in nats
(the series' convention: sum over dimensions, mean over the batch), and ``metrics`` is a
dict of scalars whose ``"loss"`` entry is the true loss (for a surrogate, not the surrogate).

* :func:`vae_loss`: the negative ELBO with the reparameterized (pathwise) gradient
  (notebooks 02 and 04);
* :func:`autoencoder_loss`: the reconstruction cross-entropy of an autoencoder (notebook 01);
* :func:`score_function_loss`: a surrogate whose gradient is the score-function estimate
  for the encoder (notebook 03);
* :func:`beta_vae_loss`: the reconstruction term plus beta times the KL, optionally with
  free bits (notebook 06); ``functools.partial(beta_vae_loss, beta=4.0)`` is a ``loss_fn``.

Any of them trains with :func:`vae_lib.training.fit` (``loss_fn=...``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from vae_lib.objectives import (
    bernoulli_log_likelihood,
    gaussian_log_density,
    kl_per_dimension,
    kl_to_standard_normal,
    reparameterize,
    vae_elbo,
)

__all__ = ["VAE_BASELINES", "autoencoder_loss", "beta_vae_loss", "score_function_loss", "vae_loss", "vae_metrics"]

VAE_BASELINES = ("batch", "posterior_mean")

Metrics = dict[str, jax.Array]


def vae_metrics(log_px: jax.Array, kl: jax.Array) -> Metrics:
    """The negative ELBO and its two terms, each a mean over the batch (nats per example)."""
    return {"loss": -jnp.mean(log_px - kl), "log_px_given_z": jnp.mean(log_px), "kl": jnp.mean(kl)}


def vae_loss(params: Any, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array) -> tuple[jax.Array, Metrics]:
    """Negative ELBO of a VAE with one reparameterized z per example, mean over the batch.

    -[log p(x|z) - KL(q(z|x) || p(z))] with z = mean + std * eps (the note's eqs. 2 and
    20-22, corrected), the KL in closed form. Its gradient in the encoder's parameters is
    the pathwise (reparameterization) estimate.

    Args:
        params, graphdef: ``nnx.split`` of a :class:`vae_lib.models.VAE`.
        x: images (B, D), floats in [0, 1].
        key: draws eps.

    Returns:
        ``(loss, metrics)``; metrics ``loss``, ``log_px_given_z`` and ``kl``.
    """
    terms = vae_elbo(nnx.merge(graphdef, params), x, key)
    metrics = vae_metrics(terms["log_px_given_z"], terms["kl"])
    return metrics["loss"], metrics


def beta_vae_loss(
    params: Any, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array, *, beta: float = 1.0, free_bits: float = 0.0
) -> tuple[jax.Array, Metrics]:
    """The beta-VAE objective, with optional free bits: -E[log p(x|z)] + beta * sum_j max(lambda, KL_j).

    KL_j is the closed-form KL of latent dimension j, averaged over the batch, and lambda is
    ``free_bits`` (nats per dimension; Kingma et al. 2016, "free bits", applied per dimension
    over the minibatch): a dimension whose KL is under lambda costs lambda and gets no gradient
    from the KL term, so the encoder is not pushed to close it. With ``beta=1`` and
    ``free_bits=0`` it is :func:`vae_loss` (Higgins et al. 2017 for beta != 1).

    Args:
        params, graphdef: ``nnx.split`` of a :class:`vae_lib.models.VAE`.
        x: images (B, D), floats in [0, 1].
        key: draws eps.
        beta: the weight of the KL term (> 0); beta < 1 buys reconstruction with rate,
            beta > 1 the reverse.
        free_bits: lambda >= 0, in nats per latent dimension.

    Returns:
        ``(loss, metrics)``: the objective above, and ``loss`` (that objective),
        ``log_px_given_z`` and ``kl`` (the true KL, without beta or free bits), each a mean over
        the batch in nats per image.
    """
    model = nnx.merge(graphdef, params)
    logits, _, mean, logvar = model(x, key)
    rec = jnp.mean(bernoulli_log_likelihood(x, logits))
    kl_j = jnp.mean(kl_per_dimension(mean, logvar), axis=0)  # (latent,)
    loss = -rec + beta * jnp.sum(jnp.maximum(kl_j, free_bits))
    return loss, {"loss": loss, "log_px_given_z": rec, "kl": jnp.sum(kl_j)}


def autoencoder_loss(params: Any, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array) -> tuple[jax.Array, Metrics]:
    """Reconstruction cross-entropy of an autoencoder, summed over pixels, mean over the batch.

    -sum_d [x_d log s_d + (1 - x_d) log(1 - s_d)] with s = sigmoid(logits): the same
    function as the VAE's reconstruction term, with no sampling (``key`` is unused).

    Returns:
        ``(loss, {"loss": loss})``.
    """
    del key
    model = nnx.merge(graphdef, params)
    loss = -jnp.mean(bernoulli_log_likelihood(x, model(x)))
    return loss, {"loss": loss}


def _score_baseline(baseline: float | str, model: nnx.Module, x: jax.Array, mean: jax.Array, log_px: jax.Array):
    if baseline == "batch":  # leave-one-out mean over the other examples
        n = log_px.shape[0]
        return (jnp.sum(log_px) - log_px) / (n - 1)
    if baseline == "posterior_mean":
        return bernoulli_log_likelihood(x, model.decoder(mean))
    return jnp.asarray(baseline, jnp.float32)


def score_function_loss(
    params: Any, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array, baseline: float | str = 0.0
) -> tuple[jax.Array, Metrics]:
    """Surrogate loss of a VAE: score-function gradient for phi, ordinary gradient for theta.

    The ELBO is E_q[log p(x|z)] - KL(q(z|x) || p(z)) (the note's eq. 2, corrected); the KL
    is in closed form (as in :func:`vae_loss`), so only the first term needs a Monte Carlo
    gradient. With z ~ q_phi(z|x) drawn and then held fixed (``stop_gradient``: no path
    from phi to z), the per-example surrogate is

        log p_theta(x|z) + stop_gradient(log p(x|z) - b(x)) * log q_phi(z|x) - KL,

    whose gradient for theta is grad_theta log p_theta(x|z) and for phi is the
    score-function estimate (log p(x|z) - b) grad_phi log q_phi(z|x) - grad_phi KL.

    Args:
        params, graphdef, x, key: as for :func:`vae_loss`.
        baseline: b(x), which must not depend on this z: a number (0.0 is no baseline);
            ``"batch"``, the mean of log p(x_j|z_j) over the *other* examples j of the
            batch (leave-one-out, so the estimate stays unbiased; needs B >= 2); or
            ``"posterior_mean"``, log p(x | z = mean of q(z|x)), one more decoder pass.

    Returns:
        ``(surrogate, metrics)`` with the metrics of :func:`vae_loss` at the same z:
        ``metrics["loss"]`` is the true negative ELBO; the surrogate's value means nothing,
        only its gradient does. Use ``functools.partial(score_function_loss, baseline=...)``
        as a ``loss_fn``.

    References:
        Williams (1992), REINFORCE; Mohamed, Rosca, Figurnov & Mnih (JMLR 2020), sec. 4.
    """
    if isinstance(baseline, str):
        if baseline not in VAE_BASELINES:
            raise ValueError(f"baseline must be a number or one of {VAE_BASELINES}; got {baseline!r}.")
        if baseline == "batch" and x.shape[0] < 2:
            raise ValueError(
                "baseline='batch' averages log p(x|z) over the *other* examples of the "
                "batch, so it needs at least 2 examples."
            )
    model = nnx.merge(graphdef, params)
    mean, logvar = model.encoder(x)
    z = jax.lax.stop_gradient(reparameterize(key, mean, logvar))
    log_px = bernoulli_log_likelihood(x, model.decoder(z))
    kl = kl_to_standard_normal(mean, logvar)
    b = jax.lax.stop_gradient(_score_baseline(baseline, model, x, mean, log_px))
    log_q = gaussian_log_density(z, mean, logvar)
    surrogate = log_px + jax.lax.stop_gradient(log_px - b) * log_q - kl
    return -jnp.mean(surrogate), vae_metrics(log_px, kl)
