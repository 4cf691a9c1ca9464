"""vae_lib.objectives and vae_lib.linear_gaussian: the ELBO's pieces, checked against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import linear_gaussian as lg
from vae_lib import objectives as obj
from vae_lib.models import VAE


@pytest.fixture(scope="module")
def exact():
    """A 6-D linear-Gaussian model with a 2-D latent, one data point, and its posterior."""
    model = lg.random_model(jax.random.key(0), dim_x=6, dim_z=2, s2=0.4)
    x = lg.sample_x(model, jax.random.key(1), 1)[0]
    m_post, s_post = lg.posterior(model, x)
    return model, x, m_post, s_post


def test_analytic_kl_is_zero_when_q_is_the_prior():
    assert float(obj.kl_to_standard_normal(jnp.zeros(5), jnp.zeros(5))) == 0.0


def test_analytic_kl_matches_monte_carlo_within_its_error():
    mean, logvar = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.3, -0.7, -1.5])
    z = obj.reparameterize(
        jax.random.key(3), jnp.broadcast_to(mean, (200_000, 3)), jnp.broadcast_to(logvar, (200_000, 3))
    )
    log_ratio = np.asarray(obj.gaussian_log_density(z, mean, logvar) - obj.standard_normal_log_density(z))
    stderr = log_ratio.std() / np.sqrt(log_ratio.size)
    assert abs(log_ratio.mean() - float(obj.kl_to_standard_normal(mean, logvar))) < 4 * stderr


def test_kl_sums_over_dimensions_and_keeps_the_batch_axis():
    mean, logvar = jnp.ones((4, 3)), jnp.zeros((4, 3))
    np.testing.assert_allclose(obj.kl_to_standard_normal(mean, logvar), np.full(4, 1.5), rtol=1e-6)


def test_gaussian_log_density_matches_the_product_of_univariate_densities():
    z, mean, logvar = jnp.array([0.3, -1.2]), jnp.array([0.0, 1.0]), jnp.array([0.0, np.log(4.0)])
    by_hand = sum(jax.scipy.stats.norm.logpdf(z[i], mean[i], jnp.exp(logvar[i] / 2)) for i in range(2))
    np.testing.assert_allclose(obj.gaussian_log_density(z, mean, logvar), by_hand, rtol=1e-6)


def test_bernoulli_log_likelihood_matches_the_direct_formula():
    x = jnp.array([[1.0, 0.0, 1.0, 0.0]])
    logits = jnp.array([[2.0, -1.0, 0.5, 3.0]])
    p = jax.nn.sigmoid(logits)
    direct = jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p), axis=-1)
    np.testing.assert_allclose(obj.bernoulli_log_likelihood(x, logits), direct, rtol=1e-6)


def test_bernoulli_log_likelihood_stays_finite_for_extreme_logits():
    x = jnp.array([[1.0, 0.0]])
    value = obj.bernoulli_log_likelihood(x, jnp.array([[-200.0, 200.0]]))
    assert np.isfinite(float(value[0])) and float(value[0]) == pytest.approx(-400.0)


def test_bernoulli_log_likelihood_is_the_same_function_inside_and_outside_jit():
    x = jax.random.bernoulli(jax.random.key(0), 0.3, (4, 784)).astype(jnp.float32)
    logits = jax.random.normal(jax.random.key(1), (4, 784))
    eager = obj.bernoulli_log_likelihood(x, logits)
    np.testing.assert_allclose(jax.jit(obj.bernoulli_log_likelihood)(x, logits), eager, rtol=1e-6)


def test_bernoulli_rejects_logits_of_another_shape():
    with pytest.raises(ValueError, match=r"shape \(2, 784\).*shape \(2, 10\)"):
        obj.bernoulli_log_likelihood(jnp.zeros((2, 784)), jnp.zeros((2, 10)))


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


def test_log_mean_exp_is_stable_for_large_log_weights():
    lw = jnp.array([1000.0, 1000.0])
    assert float(obj.log_mean_exp(lw)) == pytest.approx(1000.0)


@pytest.fixture(scope="module")
def tiny_vae():
    return VAE(in_features=12, hidden=8, latent=3, rngs=nnx.Rngs(0))


def _binary(key, shape):
    return jax.random.bernoulli(key, 0.4, shape).astype(jnp.float32)


def test_single_sample_and_analytic_kl_elbos_have_the_same_expectation(tiny_vae):
    x = _binary(jax.random.key(0), (1, 12))
    keys = jax.random.split(jax.random.key(1), 50_000)
    mc = jax.vmap(lambda k: obj.vae_elbo(tiny_vae, x, k, analytic_kl=False)["elbo"][0])(keys)
    an = jax.vmap(lambda k: obj.vae_elbo(tiny_vae, x, k, analytic_kl=True)["elbo"][0])(keys)
    mc, an = np.asarray(mc), np.asarray(an)
    stderr = np.sqrt(mc.var() / mc.size + an.var() / an.size)
    assert abs(mc.mean() - an.mean()) < 4 * stderr
    assert an.var() < mc.var()  # the closed-form KL removes part of the noise


def test_elbo_terms_add_up(tiny_vae):
    x = _binary(jax.random.key(2), (5, 12))
    terms = obj.vae_elbo(tiny_vae, x, jax.random.key(3))
    np.testing.assert_allclose(terms["elbo"], terms["log_px_given_z"] - terms["kl"], rtol=1e-6)
    assert terms["elbo"].shape == (5,)


def test_vae_importance_bound_with_one_sample_is_the_single_sample_elbo(tiny_vae):
    x = _binary(jax.random.key(4), (3, 12))
    key = jax.random.key(5)
    lw = obj.vae_log_weights(tiny_vae, x, key, 1)
    np.testing.assert_allclose(obj.importance_weighted_bound(tiny_vae, x, key, 1), lw[0], rtol=1e-6)


def test_vae_importance_bound_exceeds_the_elbo_on_average(tiny_vae):
    x = _binary(jax.random.key(6), (20, 12))
    elbo = jnp.mean(jax.vmap(lambda k: obj.vae_elbo(tiny_vae, x, k)["elbo"])(jax.random.split(jax.random.key(7), 200)))
    iw = jnp.mean(obj.importance_weighted_bound(tiny_vae, x, jax.random.key(8), 500))
    assert float(iw) > float(elbo)


def test_bound_from_log_weights_with_k_equal_to_all_draws_is_the_log_mean_exp():
    log_w = jax.random.normal(jax.random.key(0), (12, 3)) * 2 - 100
    np.testing.assert_allclose(obj.bound_from_log_weights(log_w, 12), obj.log_mean_exp(log_w, axis=0), rtol=1e-6)


def test_bound_from_log_weights_with_k_one_is_the_mean_log_weight():
    log_w = jax.random.normal(jax.random.key(1), (12, 3)) * 2 - 100
    np.testing.assert_allclose(obj.bound_from_log_weights(log_w, 1), jnp.mean(log_w, axis=0), rtol=1e-6)


def test_bound_from_log_weights_averages_disjoint_groups():
    log_w = jnp.log(jnp.array([[1.0], [3.0], [2.0], [6.0]]))
    # groups {1, 3} and {2, 6}: log 2 and log 4, mean log 8 / 2
    np.testing.assert_allclose(obj.bound_from_log_weights(log_w, 2), [np.log(8.0) / 2], rtol=1e-6)


def test_bernoulli_entropy_is_the_loss_of_the_perfect_model_on_grey_pixels():
    p = jnp.array([[0.1, 0.5, 0.9, 0.3]])
    logits = jnp.log(p) - jnp.log1p(-p)
    np.testing.assert_allclose(obj.bernoulli_entropy(p), -obj.bernoulli_log_likelihood(p, logits), rtol=1e-5)
    assert float(obj.bernoulli_entropy(jnp.array([[0.0, 1.0]]))[0]) == 0.0
