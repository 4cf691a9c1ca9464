"""vae_lib.linear_gaussian: a latent model solved exactly, and what it proves about the ELBO.

Two exact models: a 6-D one with a 2-D latent (``exact``), where the ELBO, its gap and the
importance-weighted bound are checked against log p(x); and a 3-D one with noise 1 where the
prior matters (``prior_matters``), where notebook 02's claims about the lecture note's errata
are checked: what the objective without log p(z) does to q, and what a diagonal q costs.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_lib import linear_gaussian as lg
from vae_lib import objectives as obj


@pytest.fixture(scope="module")
def exact():
    """A 6-D linear-Gaussian model with a 2-D latent, one data point, and its posterior."""
    model = lg.random_model(jax.random.key(0), dim_x=6, dim_z=2, s2=0.4)
    x = lg.sample_x(model, jax.random.key(1), 1)[0]
    m_post, s_post = lg.posterior(model, x)
    return model, x, m_post, s_post


def test_elbo_is_below_log_evidence_for_any_gaussian_q(exact):
    model, x, m_post, s_post = exact
    log_px = float(lg.log_marginal(model, x))
    for shift, scale in [(0.5, 1.0), (-1.0, 0.3), (0.0, 2.0), (2.0, 5.0)]:
        assert float(lg.elbo(model, x, m_post + shift, s_post * scale)) < log_px


def test_elbo_equals_log_evidence_at_the_exact_posterior(exact):
    model, x, m_post, s_post = exact
    np.testing.assert_allclose(lg.elbo(model, x, m_post, s_post), lg.log_marginal(model, x), rtol=1e-5)


def test_elbo_gap_equals_kl_from_q_to_the_posterior(exact):
    model, x, m_post, s_post = exact
    for shift, scale in [(0.5, 1.0), (-1.0, 0.3), (0.2, 3.0)]:
        m, s = m_post + shift, s_post * scale
        gap = lg.log_marginal(model, x) - lg.elbo(model, x, m, s)
        np.testing.assert_allclose(gap, lg.kl_gaussians(m, s, m_post, s_post), rtol=1e-4, atol=1e-5)


def test_closed_form_elbo_matches_monte_carlo_of_log_weights(exact):
    model, x, m_post, s_post = exact
    m, s = m_post + 0.7, s_post * 2.0
    log_w = np.asarray(lg.log_weights(model, x, m, s, jax.random.key(5), 200_000))
    stderr = log_w.std() / np.sqrt(log_w.size)
    assert abs(log_w.mean() - float(lg.elbo(model, x, m, s))) < 4 * stderr


def test_importance_weighted_bound_rises_with_k_towards_log_evidence(exact):
    model, x, m_post, s_post = exact
    m, s = m_post + 1.0, s_post * 3.0  # a poor q, so the bound has room to rise
    reps = 2000

    def bound(k):
        """Mean and standard error of `reps` independent estimates of L_k."""
        lw = lg.log_weights(model, x, m, s, jax.random.key(k), reps * k).reshape(reps, k)
        est = np.asarray(obj.log_mean_exp(lw, axis=1))
        return est.mean(), est.std() / np.sqrt(reps)

    (b1, e1), (b10, e10), (b100, e100) = bound(1), bound(10), bound(100)
    log_px = float(lg.log_marginal(model, x))
    assert b1 + 4 * e1 < b10 and b10 + 4 * e10 < b100 + 4 * e100, (b1, b10, b100)
    assert b100 <= log_px + 4 * e100
    assert log_px - b100 < 0.05 * (log_px - b1), (b1, b100, log_px)


def test_dropping_the_log_prior_no_longer_gives_a_lower_bound(exact):
    """The note's eq. 4 without log p(z) exceeds log p(x) at the posterior on this model."""
    model, x, m_post, s_post = exact
    assert float(lg.elbo_without_prior(model, x, m_post, s_post)) > float(lg.log_marginal(model, x))


# ---------------------------------------------------------------- the note's objective without log p(z)


@pytest.fixture(scope="module")
def prior_matters():
    """A model where the prior matters (noise s2 = 1, 3 observed dimensions, 2 latent)."""
    model = lg.random_model(jax.random.key(2), dim_x=3, dim_z=2, s2=1.0)
    x = lg.sample_x(model, jax.random.key(1), 1)[0]
    return model, x


def test_the_least_squares_gaussian_is_a_stationary_point_of_the_note_objective(prior_matters):
    model, x = prior_matters
    m, s = lg.eq4_maximiser(model, x)
    grad_m, grad_s = jax.grad(lambda m_, s_: lg.elbo_without_prior(model, x, m_, s_), argnums=(0, 1))(m, s)
    np.testing.assert_allclose(grad_m, 0.0, atol=1e-4)
    np.testing.assert_allclose(grad_s, 0.0, atol=1e-4)


def test_the_note_objective_prefers_the_drifted_q_to_the_posterior(prior_matters):
    model, x = prior_matters
    m_post, s_post = lg.posterior(model, x)
    m_ls, s_ls = lg.eq4_maximiser(model, x)
    assert float(lg.elbo_without_prior(model, x, m_ls, s_ls)) > float(lg.elbo_without_prior(model, x, m_post, s_post))
    assert float(lg.elbo(model, x, m_ls, s_ls)) < float(lg.elbo(model, x, m_post, s_post))


def test_the_drifted_q_is_farther_from_the_origin_and_wider_than_the_posterior(prior_matters):
    model, x = prior_matters
    m_post, s_post = lg.posterior(model, x)
    m_ls, s_ls = lg.eq4_maximiser(model, x)
    assert float(jnp.linalg.norm(m_ls)) > float(jnp.linalg.norm(m_post))
    # s_ls - s_post is positive definite: wider in every direction
    assert float(jnp.min(jnp.linalg.eigvalsh(s_ls - s_post))) > 0.0
    assert float(lg.kl_gaussians(m_ls, s_ls, m_post, s_post)) > 0.1


def test_the_note_objective_grows_without_bound_along_a_latent_the_decoder_ignores(prior_matters):
    model, x = prior_matters
    ignoring = model._replace(W=model.W.at[:, 1].set(0.0))
    m, s = lg.posterior(ignoring, x)
    sds = [1.0, 10.0, 100.0]
    note = [float(lg.elbo_without_prior(ignoring, x, m, s.at[1, 1].set(sd**2))) for sd in sds]
    true = [float(lg.elbo(ignoring, x, m, s.at[1, 1].set(sd**2))) for sd in sds]
    np.testing.assert_allclose(np.diff(note), math.log(10.0), rtol=1e-3)  # + log 10 per tenfold sd (float32)
    assert true[0] > true[1] > true[2]


def test_the_true_noise_level_has_the_largest_marginal_likelihood(prior_matters):
    model, _ = prior_matters
    data = lg.sample_x(model, jax.random.key(5), 2000)
    avg = {s2: float(lg.average_log_marginal(model._replace(s2=s2), data)) for s2 in (0.1, 1.0, 10.0)}
    assert avg[1.0] > avg[0.1] and avg[1.0] > avg[10.0]


def test_the_best_diagonal_q_beats_every_nearby_diagonal_q(prior_matters):
    model, x = prior_matters
    m, s = lg.best_diagonal_q(model, x)
    assert jnp.allclose(s, jnp.diag(jnp.diag(s)))
    best = lg.elbo(model, x, m, s)
    nudges = [(0.05, 0.0, 0.0, 0.0), (0.0, -0.05, 0.0, 0.0), (0.0, 0.0, 0.1, 0.0), (0.0, 0.0, 0.0, -0.1)]
    for i, step in enumerate(nudges):  # (mean shift, log-variance change)
        dm, dv = jnp.array(step[:2]), jnp.array(step[2:])
        assert lg.elbo(model, x, m + dm, s * jnp.diag(jnp.exp(dv))) < best, i


def test_the_diagonal_gap_is_the_kl_to_the_posterior_and_grows_with_its_correlation(prior_matters):
    model, x = prior_matters
    m, s = lg.best_diagonal_q(model, x)
    m_post, s_post = lg.posterior(model, x)
    gap = lg.log_marginal(model, x) - lg.elbo(model, x, m, s)
    rho = s_post[0, 1] / jnp.sqrt(s_post[0, 0] * s_post[1, 1])
    assert gap == pytest.approx(float(lg.kl_gaussians(m, s, m_post, s_post)), abs=1e-6)
    assert gap == pytest.approx(float(-0.5 * jnp.log(1 - rho**2)), rel=1e-4)
    assert jnp.all(jnp.diag(s) < jnp.diag(s_post))  # mean-field underestimates the marginal variances
