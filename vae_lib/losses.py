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
  for the encoder (notebooks 03 and 03b);
* :func:`beta_vae_loss`: the reconstruction term plus beta times the KL, optionally with
  free bits (notebook 06); ``functools.partial(beta_vae_loss, beta=4.0)`` is a ``loss_fn``;
* :func:`pathwise_loss`, :func:`sticking_the_landing_loss`, :func:`leave_one_out_score_loss`:
  with K samples of z per image, the pathwise estimate averaged over K, the "sticking the
  landing" pathwise estimate (Roeder et al. 2017) and the score-function estimate with a
  leave-one-out baseline (RLOO; Kool et al. 2019), at matched compute (notebook 03b). Bind K
  with ``functools.partial(pathwise_loss, num_samples=4)``.

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
    log_importance_weight,
    reparameterize,
    vae_elbo,
)

__all__ = [
    "VAE_BASELINES",
    "autoencoder_loss",
    "beta_vae_loss",
    "k_samples",
    "leave_one_out_score_loss",
    "pathwise_loss",
    "score_function_loss",
    "sticking_the_landing_loss",
    "vae_loss",
    "vae_metrics",
]

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
        ``(objective, metrics)``: the objective above (what the gradient is taken of), and the
        metrics ``loss``, the true loss -ELBO = -log_px_given_z + kl (as for every loss of this
        module, not the objective: the two differ unless beta = 1 and no dimension is under the
        free-bits floor), ``objective`` (the first return value), ``log_px_given_z`` and ``kl``
        (the true KL, without beta or free bits), each a mean over the batch in nats per image.
        A training history therefore holds both, ``train_loss`` and ``train_objective``.
    """
    model = nnx.merge(graphdef, params)
    logits, _, mean, logvar = model(x, key)
    rec = jnp.mean(bernoulli_log_likelihood(x, logits))
    kl_j = jnp.mean(kl_per_dimension(mean, logvar), axis=0)  # (latent,)
    kl = jnp.sum(kl_j)
    objective = -rec + beta * jnp.sum(jnp.maximum(kl_j, free_bits))
    return objective, {"loss": -rec + kl, "objective": objective, "log_px_given_z": rec, "kl": kl}


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


# ----------------------------------------------------------------- K samples per image (notebook 03b)
def _check_num_samples(num_samples: int, least: int = 1) -> int:
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < least:
        raise ValueError(f"num_samples (K) must be an integer >= {least}; got {num_samples!r}.")
    return int(num_samples)


def k_samples(model: nnx.Module, x: jax.Array, key: jax.Array, num_samples: int, reparameterized: bool):
    """One encoder pass, then K draws of z per image and their decoder log-likelihoods.

    Returns ``(mean, logvar, z, log_px)``: mean and logvar (B, L), z (K, B, L), log_px (K, B)
    = log p(x|z_k), from one decoder pass over all K * B draws. With ``reparameterized`` z is
    differentiable in mean and logvar (the path); without it z is held fixed
    (``stop_gradient``) before it is decoded. Draw k uses ``jax.random.split(key, K)[k]``;
    with K = 1 the draw is ``key``'s, the one :func:`vae_loss` makes.
    """
    mean, logvar = model.encoder(x)
    keys = key[None] if num_samples == 1 else jax.random.split(key, num_samples)
    z = jax.vmap(lambda k: reparameterize(k, mean, logvar))(keys)
    if not reparameterized:
        z = jax.lax.stop_gradient(z)  # the samples as plain numbers: no path back to phi
    x_k = jnp.broadcast_to(x, (num_samples, *x.shape))
    log_px = bernoulli_log_likelihood(x_k, model.decoder(z.reshape(-1, z.shape[-1])).reshape(x_k.shape))
    return mean, logvar, z, log_px


def pathwise_loss(
    params: nnx.State, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array, num_samples: int = 1
) -> tuple[jax.Array, Metrics]:
    """Negative ELBO with K reparameterized samples of z per image: the pathwise gradient averaged over K.

    The per-example loss is -[(1/K) sum_k log p(x|z_k) - KL(q(z|x) || p(z))] with
    z_k = mean + std * eps_k and the KL in closed form. Its gradient in the encoder's
    parameters is the mean of K independent pathwise estimates, so its variance is that of
    one estimate divided by K; it costs one encoder pass and K decoder passes per image.
    With ``num_samples=1`` it is :func:`vae_loss` (the same draw for the same
    key).

    Args:
        params, graphdef: ``nnx.split`` of a :class:`vae_lib.models.VAE`.
        x: images (B, D), floats in [0, 1].
        key: draws the K * B noise vectors.
        num_samples: K, the samples of z per image (a Python int: bind it with
            ``functools.partial`` to make a ``loss_fn``).

    Returns:
        ``(loss, metrics)``; metrics ``loss`` (the same number), ``log_px_given_z`` (mean over
        the K samples and the batch) and ``kl``.

    References:
        Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014), eq. 7;
        Mohamed, Rosca, Figurnov & Mnih (JMLR 2020), sec. 5.
    """
    num_samples = _check_num_samples(num_samples)
    model = nnx.merge(graphdef, params)
    mean, logvar, _, log_px = k_samples(model, x, key, num_samples, reparameterized=True)
    metrics = vae_metrics(jnp.mean(log_px, axis=0), kl_to_standard_normal(mean, logvar))
    return metrics["loss"], metrics


def sticking_the_landing_loss(
    params: nnx.State, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array, num_samples: int = 1
) -> tuple[jax.Array, Metrics]:
    """Surrogate loss whose encoder gradient is the "sticking the landing" (STL) pathwise estimate.

    The single-sample ELBO log p(x|z) + log p(z) - log q_phi(z|x), with z = g_phi(eps)
    reparameterized, depends on phi twice: through z (the path) and through the parameters
    of the density q_phi in log q_phi(z|x). Its pathwise gradient is the sum of both. The
    second part is -grad_phi log q_phi(z|x) at fixed z, the score, whose mean is zero
    (E_q[grad_phi log q_phi] = 0): dropping it leaves the mean alone. STL drops it by
    stopping the gradient through the parameters of q (not through z):

        log p_theta(x|z) + log p(z) - log q_{stop_gradient(phi)}(z|x),   z = g_phi(eps).

    When q is the exact posterior, log p(x, z) - log q(z|x) = log p(x) for every z, so the
    remaining path term is zero and the estimate has zero variance; the ordinary pathwise
    estimate keeps the score term's variance even then. Away from that point the variance
    may be lower or higher than the closed-form-KL pathwise estimate's (Roeder et al.).
    The decoder's gradient is the ordinary one. K samples per image are averaged.

    Args:
        params, graphdef, x, key, num_samples: as for :func:`pathwise_loss`.

    Returns:
        ``(surrogate, metrics)``. The surrogate's value is minus the single-sample ELBO
        estimate (averaged over the K samples and the batch), itself an unbiased estimate of
        -ELBO; ``metrics`` are those of :func:`pathwise_loss` at the same z (the
        closed-form KL), so ``metrics["loss"]`` is the true negative ELBO estimate the other
        losses report.

    References:
        Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
        Estimators for Variational Inference" (NeurIPS 2017).
    """
    num_samples = _check_num_samples(num_samples)
    model = nnx.merge(graphdef, params)
    mean, logvar, z, log_px = k_samples(model, x, key, num_samples, reparameterized=True)
    # the one-sample ELBO with q's parameters held fixed: the path through z stays
    elbo = log_importance_weight(log_px, z, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(logvar))  # (K, B)
    metrics = vae_metrics(jnp.mean(log_px, axis=0), kl_to_standard_normal(mean, logvar))
    return -jnp.mean(elbo), metrics


def leave_one_out_score_loss(
    params: nnx.State, graphdef: nnx.GraphDef, x: ArrayLike, key: jax.Array, num_samples: int = 4
) -> tuple[jax.Array, Metrics]:
    """Surrogate loss whose encoder gradient is the score-function estimate with a leave-one-out baseline.

    K samples z_1..z_K ~ q_phi(z|x) per image, drawn and then held fixed (no path from phi
    to z). Sample k's baseline is the mean of log p(x|z_j) over the *other* samples j != k
    of the same image, b_k = (sum_j log p(x|z_j) - log p(x|z_k)) / (K - 1): it does not
    depend on z_k, so the estimate stays unbiased, and it tracks the level of log p(x|z)
    for this image at no extra decoder pass. The per-example surrogate is

        (1/K) sum_k [log p_theta(x|z_k) + stop_gradient(log p(x|z_k) - b_k) log q_phi(z_k|x)] - KL,

    whose gradient for theta is the K-sample average of grad_theta log p_theta(x|z_k) and for
    phi is (1/K) sum_k (log p(x|z_k) - b_k) grad_phi log q_phi(z_k|x) - grad_phi KL, the KL
    in closed form (as in :func:`score_function_loss`). It costs one encoder
    pass and K decoder passes per image, like :func:`pathwise_loss` with the same K.

    Args:
        params, graphdef, x, key: as for :func:`pathwise_loss`.
        num_samples: K >= 2 (with one sample there is no other to leave out).

    Returns:
        ``(surrogate, metrics)``; the surrogate's value means nothing, only its gradient does;
        ``metrics`` are those of :func:`pathwise_loss` at the same z, so ``metrics["loss"]``
        is the true negative ELBO estimate.

    References:
        Kool, van Hoof & Welling, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"
        (ICLR 2019 workshop); Mnih & Rezende, "Variational Inference for Monte Carlo
        Objectives" (VIMCO, ICML 2016), the same leave-one-out idea for the multi-sample
        bound; Williams (1992), REINFORCE.
    """
    num_samples = _check_num_samples(num_samples, least=2)
    model = nnx.merge(graphdef, params)
    mean, logvar, z, log_px = k_samples(model, x, key, num_samples, reparameterized=False)
    baseline = (jnp.sum(log_px, axis=0) - log_px) / (num_samples - 1)  # (K, B), free of z_k
    log_q = gaussian_log_density(z, mean, logvar)  # (K, B): the path to phi is the score
    kl = kl_to_standard_normal(mean, logvar)
    surrogate = jnp.mean(log_px + jax.lax.stop_gradient(log_px - baseline) * log_q, axis=0) - kl
    return -jnp.mean(surrogate), vae_metrics(jnp.mean(log_px, axis=0), kl)
