"""Numeric claims notebook 02 makes about the lecture note's errata, checked on exact models.

Each test proves one statement the notebook prints or plots: what the note's objective
without log p(z) does to q, that the Bernoulli formula on grey pixels is not normalised,
that the sample carries no gradient to the encoder without reparameterisation, and the
spread of a one-sample Monte Carlo KL term.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import linear_gaussian as lg
from vae_lib import objectives as obj
from vae_lib.estimators import reconstruction_grads
from vae_lib.models import VAE


@pytest.fixture(scope="module")
def exact():
    """A model where the prior matters (noise s2 = 1, 3 observed dimensions, 2 latent)."""
    model = lg.random_model(jax.random.key(2), dim_x=3, dim_z=2, s2=1.0)
    x = lg.sample_x(model, jax.random.key(1), 1)[0]
    return model, x


def test_the_least_squares_gaussian_is_a_stationary_point_of_the_note_objective(exact):
    model, x = exact
    m, s = lg.eq4_maximiser(model, x)
    grad_m, grad_s = jax.grad(lambda m_, s_: lg.elbo_without_prior(model, x, m_, s_), argnums=(0, 1))(m, s)
    np.testing.assert_allclose(grad_m, 0.0, atol=1e-4)
    np.testing.assert_allclose(grad_s, 0.0, atol=1e-4)


def test_the_note_objective_prefers_the_drifted_q_to_the_posterior(exact):
    model, x = exact
    m_post, s_post = lg.posterior(model, x)
    m_ls, s_ls = lg.eq4_maximiser(model, x)
    assert float(lg.elbo_without_prior(model, x, m_ls, s_ls)) > float(lg.elbo_without_prior(model, x, m_post, s_post))
    assert float(lg.elbo(model, x, m_ls, s_ls)) < float(lg.elbo(model, x, m_post, s_post))


def test_the_drifted_q_is_farther_from_the_origin_and_wider_than_the_posterior(exact):
    model, x = exact
    m_post, s_post = lg.posterior(model, x)
    m_ls, s_ls = lg.eq4_maximiser(model, x)
    assert float(jnp.linalg.norm(m_ls)) > float(jnp.linalg.norm(m_post))
    # s_ls - s_post is positive definite: wider in every direction
    assert float(jnp.min(jnp.linalg.eigvalsh(s_ls - s_post))) > 0.0
    assert float(lg.kl_gaussians(m_ls, s_ls, m_post, s_post)) > 0.1


def test_the_note_objective_grows_without_bound_along_a_latent_the_decoder_ignores(exact):
    model, x = exact
    ignoring = model._replace(W=model.W.at[:, 1].set(0.0))
    m, s = lg.posterior(ignoring, x)
    sds = [1.0, 10.0, 100.0]
    note = [float(lg.elbo_without_prior(ignoring, x, m, s.at[1, 1].set(sd**2))) for sd in sds]
    true = [float(lg.elbo(ignoring, x, m, s.at[1, 1].set(sd**2))) for sd in sds]
    np.testing.assert_allclose(np.diff(note), math.log(10.0), rtol=1e-3)  # + log 10 per tenfold sd (float32)
    assert true[0] > true[1] > true[2]


def test_the_true_noise_level_has_the_largest_marginal_likelihood(exact):
    model, _ = exact
    data = lg.sample_x(model, jax.random.key(5), 2000)
    avg = {s2: float(lg.average_log_marginal(model._replace(s2=s2), data)) for s2 in (0.1, 1.0, 10.0)}
    assert avg[1.0] > avg[0.1] and avg[1.0] > avg[10.0]


@pytest.mark.parametrize("logit", [-6.0, -0.5, 0.0, 2.0])
def test_bernoulli_formula_on_grey_pixels_integrates_to_at_most_one_half(logit):
    xs = np.linspace(0.0, 1.0, 20_001)
    density = np.exp(xs * logit - np.logaddexp(0.0, logit))
    integral = np.trapezoid(density, xs)
    closed = math.exp(float(obj.bernoulli_log_integral(logit)))
    assert integral == pytest.approx(closed, rel=1e-5)
    if logit != 0.0:
        assert closed == pytest.approx(math.expm1(logit) / (logit * (1.0 + math.exp(logit))), rel=1e-5)
    assert integral <= 0.5 + 1e-9


@pytest.mark.parametrize("logit", [-6.0, 0.0, 2.0])
def test_bernoulli_formula_on_binary_pixels_sums_to_one(logit):
    lik = jnp.array([[0.0], [1.0]])
    total = jnp.sum(jnp.exp(obj.bernoulli_log_likelihood(lik, jnp.full((2, 1), logit))))
    assert float(total) == pytest.approx(1.0, rel=1e-6)


def test_without_reparameterisation_the_encoder_gets_no_gradient_from_the_sample():
    model = VAE(in_features=12, hidden=8, latent=3, rngs=nnx.Rngs(0))
    x = jax.random.bernoulli(jax.random.key(0), 0.4, (4, 12)).astype(jnp.float32)
    plain = reconstruction_grads(model, x, jax.random.key(1), False)
    trick = reconstruction_grads(model, x, jax.random.key(1), True)
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(plain["encoder"]))
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(trick["encoder"]))


def test_the_decoder_gets_the_same_gradient_with_or_without_the_trick():
    model = VAE(in_features=12, hidden=8, latent=3, rngs=nnx.Rngs(0))
    x = jax.random.bernoulli(jax.random.key(0), 0.4, (4, 12)).astype(jnp.float32)
    plain = reconstruction_grads(model, x, jax.random.key(1), False)
    trick = reconstruction_grads(model, x, jax.random.key(1), True)
    for a, b in zip(jax.tree.leaves(plain["decoder"]), jax.tree.leaves(trick["decoder"]), strict=False):
        np.testing.assert_array_equal(a, b)
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(plain["decoder"]))


def test_one_sample_kl_term_has_the_predicted_standard_deviation():
    """obj.kl_estimate_std is the sd of log q(z) - log p(z) measured over many z ~ q."""
    mu = 0.8 * jax.random.normal(jax.random.key(10), (20,))
    logvar = jnp.log(jax.random.uniform(jax.random.key(11), (20,), minval=0.05, maxval=0.5))
    n = 200_000
    z = obj.reparameterize(jax.random.key(12), jnp.broadcast_to(mu, (n, 20)), jnp.broadcast_to(logvar, (n, 20)))
    terms = np.asarray(obj.gaussian_log_density(z, mu, logvar) - obj.standard_normal_log_density(z))
    predicted = float(obj.kl_estimate_std(mu, logvar))
    assert terms.std() == pytest.approx(predicted, rel=0.02)
    assert terms.mean() == pytest.approx(float(obj.kl_to_standard_normal(mu, logvar)), abs=4 * predicted / np.sqrt(n))


def test_the_best_diagonal_q_beats_every_nearby_diagonal_q(exact):
    model, x = exact
    m, s = lg.best_diagonal_q(model, x)
    assert jnp.allclose(s, jnp.diag(jnp.diag(s)))
    best = lg.elbo(model, x, m, s)
    nudges = [(0.05, 0.0, 0.0, 0.0), (0.0, -0.05, 0.0, 0.0), (0.0, 0.0, 0.1, 0.0), (0.0, 0.0, 0.0, -0.1)]
    for i, step in enumerate(nudges):  # (mean shift, log-variance change)
        dm, dv = jnp.array(step[:2]), jnp.array(step[2:])
        assert lg.elbo(model, x, m + dm, s * jnp.diag(jnp.exp(dv))) < best, i


def test_the_diagonal_gap_is_the_kl_to_the_posterior_and_grows_with_its_correlation(exact):
    model, x = exact
    m, s = lg.best_diagonal_q(model, x)
    m_post, s_post = lg.posterior(model, x)
    gap = lg.log_marginal(model, x) - lg.elbo(model, x, m, s)
    rho = s_post[0, 1] / jnp.sqrt(s_post[0, 0] * s_post[1, 1])
    assert gap == pytest.approx(float(lg.kl_gaussians(m, s, m_post, s_post)), abs=1e-6)
    assert gap == pytest.approx(float(-0.5 * jnp.log(1 - rho**2)), rel=1e-4)
    assert jnp.all(jnp.diag(s) < jnp.diag(s_post))  # mean-field underestimates the marginal variances
