"""vae_lib.objectives: log-densities, the KL term, the ELBO and the bound L_k, checked against exact answers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import objectives as obj
from vae_lib.models import VAE


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


def test_kl_per_dimension_sums_to_the_closed_form_kl():
    mean, logvar = jax.random.normal(jax.random.key(1), (2, 5, 4))
    per_dim = obj.kl_per_dimension(mean, logvar)
    assert per_dim.shape == (5, 4)
    assert jnp.allclose(per_dim.sum(-1), obj.kl_to_standard_normal(mean, logvar))


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


def _z_blind(model):
    """The model with its decoder's first layer zeroed: log p(x|z) no longer depends on z."""
    first = model.decoder.net.layers[0]
    first.kernel[...] = jnp.zeros_like(first.kernel[...])
    return model


def test_when_the_decoder_ignores_z_the_analytic_kl_elbo_has_no_variance_and_the_single_sample_one_has_the_kl_terms():
    # elbo_analytic_kl's noise comes only from log p(x|z), which is then constant: zero variance.
    # elbo_single_sample keeps the one-sample KL term, whose sd is kl_estimate_std (q is not the prior).
    # (In general neither estimate is always the less noisy: see elbo_analytic_kl's docstring.)
    model = _z_blind(VAE(in_features=12, hidden=8, latent=3, rngs=nnx.Rngs(0)))
    x = _binary(jax.random.key(0), (1, 12))
    keys = jax.random.split(jax.random.key(1), 20_000)
    mc = np.asarray(jax.vmap(lambda k: obj.vae_elbo(model, x, k, analytic_kl=False)["elbo"][0])(keys))
    an = np.asarray(jax.vmap(lambda k: obj.vae_elbo(model, x, k, analytic_kl=True)["elbo"][0])(keys))
    mean, logvar = model.encoder(x)
    predicted = float(obj.kl_estimate_std(mean, logvar)[0])
    assert predicted > 0.05, "q is too close to the prior for the comparison to mean something"
    assert an.std() < 1e-4 * predicted
    assert mc.std() == pytest.approx(predicted, rel=0.05)


def test_log_importance_weight_is_log_likelihood_plus_log_prior_minus_log_posterior():
    z, mean, logvar = jax.random.normal(jax.random.key(0), (3, 4, 2))
    log_px = jnp.array([-3.0, -10.0, 0.5, -1.0])
    by_hand = [
        float(log_px[i])
        + float(jax.scipy.stats.norm.logpdf(z[i]).sum())
        - float(jax.scipy.stats.norm.logpdf(z[i], mean[i], jnp.exp(logvar[i] / 2)).sum())
        for i in range(4)
    ]
    np.testing.assert_allclose(obj.log_importance_weight(log_px, z, mean, logvar), by_hand, rtol=1e-5)


def test_log_importance_weight_broadcasts_k_samples_against_one_posterior():
    z = jax.random.normal(jax.random.key(1), (5, 4, 2))  # (K, B, L)
    mean, logvar = jax.random.normal(jax.random.key(2), (2, 4, 2))  # (B, L)
    log_px = jnp.zeros((5, 4))
    out = obj.log_importance_weight(log_px, z, mean, logvar)
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out[3], obj.log_importance_weight(log_px[3], z[3], mean, logvar), rtol=1e-6)


def test_elbo_single_sample_is_the_log_importance_weight_of_the_bernoulli_log_likelihood():
    x = _binary(jax.random.key(3), (4, 12))
    logits = jax.random.normal(jax.random.key(4), (4, 12))
    z, mean, logvar = jax.random.normal(jax.random.key(5), (3, 4, 3))
    np.testing.assert_array_equal(
        obj.elbo_single_sample(x, logits, z, mean, logvar),
        obj.log_importance_weight(obj.bernoulli_log_likelihood(x, logits), z, mean, logvar),
    )


def test_vae_log_weights_are_the_log_importance_weights_of_the_models_samples(tiny_vae):
    x = _binary(jax.random.key(6), (3, 12))
    key = jax.random.key(7)
    lw = obj.vae_log_weights(tiny_vae, x, key, 2)
    mean, logvar = tiny_vae.encoder(x)
    for i, k in enumerate(jax.random.split(key, 2)):
        z = obj.reparameterize(k, mean, logvar)
        log_px = obj.bernoulli_log_likelihood(x, tiny_vae.decoder(z))
        np.testing.assert_allclose(lw[i], obj.log_importance_weight(log_px, z, mean, logvar), rtol=1e-5)


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


def test_bernoulli_log_integral_matches_a_float64_quadrature():
    # log of the integral over [0, 1] of exp(x l - softplus(l)), against scipy's adaptive quadrature in float64,
    # on both sides of the series branch (|l| < 1e-4): a wrong series term (-l^2/24 instead of -l^2/12) is off
    # by 3e-10 at l = 9e-5, a thousand times the tolerance.
    from scipy import integrate

    logits = np.array([-40.0, -6.0, -1.0, -1e-3, -9e-5, -1e-6, 0.0, 3e-5, 9.9e-5, 1.01e-4, 0.5, 2.0, 30.0])
    with jax.enable_x64(True):
        got = np.asarray(obj.bernoulli_log_integral(jnp.asarray(logits, jnp.float64)))
    assert got.dtype == np.float64
    for logit, value in zip(logits, got, strict=True):
        softplus = np.logaddexp(0.0, logit)
        integral, _ = integrate.quad(
            lambda x, a=logit, sp=softplus: np.exp(x * a - sp), 0.0, 1.0, epsabs=0.0, epsrel=1e-13
        )
        assert abs(value - np.log(integral)) < 1e-13, (logit, value, np.log(integral))
