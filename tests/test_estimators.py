"""vae_lib.estimators: unbiasedness, exact variances, baselines, the VAE encoder's gradient estimates.

Monte Carlo assertions use fixed seeds and a tolerance of 5 standard errors; each also
checks that the standard error is small enough for the comparison to mean something.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from vae_lib import estimators as est
from vae_lib import losses
from vae_lib.models import VAE

N = 100_000
MEAN = jnp.array([0.5, -1.0, 2.0])
STD = jnp.array([1.0, 0.5, 1.5])
W = jnp.array([1.5, -2.0, 0.5])
TARGET = jnp.array([1.0, 0.0, -1.0])

# cost, exact d/dmean, exact d/dstd of E[f(x)] for x ~ N(MEAN, diag(STD^2))
COSTS = {
    "constant": (lambda x: jnp.asarray(3.0), jnp.zeros(3), jnp.zeros(3)),
    "linear": (lambda x: jnp.dot(W, x) + 1.0, W, jnp.zeros(3)),
    "quadratic": (lambda x: jnp.sum(W * (x - TARGET) ** 2), 2 * W * (MEAN - TARGET), 2 * W * STD),
}
SAMPLERS = {"score": est.score_function_samples, "pathwise": est.pathwise_samples}


def _se(rows):
    return np.asarray(jnp.std(rows, axis=0, ddof=1)) / np.sqrt(rows.shape[0])


@pytest.mark.parametrize("estimator", list(SAMPLERS))
@pytest.mark.parametrize("cost", list(COSTS))
def test_estimator_is_unbiased_for_analytic_cost(estimator, cost):
    f, exact_mean, exact_std = COSTS[cost]
    d_mean, d_std = SAMPLERS[estimator](f, MEAN, STD, jax.random.key(1), N)
    for rows, exact in ((d_mean, exact_mean), (d_std, exact_std)):
        se = _se(rows)
        assert np.all(5 * se < 0.3 * np.maximum(1.0, np.abs(exact))), "too few samples"
        np.testing.assert_array_less(np.abs(np.asarray(rows.mean(0)) - exact), 5 * se + 1e-6)


def test_rows_have_shape_num_samples_by_mean_shape():
    d_mean, d_std = est.pathwise_samples(
        lambda x: jnp.sum(x**2), jnp.zeros((2, 3)), jnp.ones((2, 3)), jax.random.key(0), 7
    )
    assert d_mean.shape == d_std.shape == (7, 2, 3)
    d_mean, d_std = est.score_function_samples(lambda x: x**2, 0.0, 1.0, jax.random.key(0), 5)
    assert d_mean.shape == d_std.shape == (5,)


def test_score_function_uses_gaussian_scores_on_paired_noise():
    # With the constant cost 3 the score-function rows are 3 x the scores; with the linear
    # cost W.x + 1 the pathwise d_std rows are W * eps. Same key, same eps: the scores must
    # be eps/std and (eps^2 - 1)/std. (Same calls as the unbiasedness test: no recompiling.)
    f_const, f_lin = COSTS["constant"][0], COSTS["linear"][0]
    sc_mean, sc_std = est.score_function_samples(f_const, MEAN, STD, jax.random.key(1), N)
    eps = est.pathwise_samples(f_lin, MEAN, STD, jax.random.key(1), N)[1] / W
    np.testing.assert_allclose(sc_mean, 3 * eps / STD, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sc_std, 3 * (eps**2 - 1) / STD, rtol=1e-4, atol=1e-3)


def test_cost_must_return_a_scalar():
    with pytest.raises(ValueError, match="scalar"):
        est.pathwise_samples(lambda x: x**2, MEAN, STD, jax.random.key(0), 4)


def test_std_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        est.score_function_samples(jnp.sum, MEAN, -STD, jax.random.key(0), 4)


# ----- exact variances of the Mohamed et al. (2020) Fig. 2 setup -----

CASES = [(1.0, 1.0, 3.0, 0.0), (1.0, 1.0, -2.0, 0.0), (0.3, 0.7, -1.2, 2.5), (1.0, 1.0, 0.0, 5.0)]


@pytest.mark.parametrize("mu,sigma,k,b", CASES)
def test_closed_form_variances_equal_gauss_hermite_quadrature(mu, sigma, k, b):
    # Every estimator here is a polynomial in eps, so 40-point quadrature is exact.
    t, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    x = mu + sigma * t
    f = (x - k) ** 2 - b
    rows = {
        "score_mu": f * t / sigma,
        "score_sigma": f * (t**2 - 1) / sigma,
        "pathwise_mu": 2 * (x - k),
        "pathwise_sigma": 2 * (x - k) * t,
    }
    exact = est.gaussian_quadratic_variances(mu, sigma, k, b)
    grads = est.gaussian_quadratic_gradients(mu, sigma, k)
    for name, g in rows.items():
        m = np.sum(w * g)
        np.testing.assert_allclose(m, grads[0] if name.endswith("mu") else grads[1], atol=1e-9)
        np.testing.assert_allclose(np.sum(w * g**2) - m**2, exact[name], rtol=1e-9)


def test_closed_form_variances_in_two_dimensions_equal_quadrature():
    mu, sigma, k, b = 0.5, 1.3, 2.0, 1.0
    t, w = np.polynomial.hermite_e.hermegauss(30)
    w = w / w.sum()
    t1, t2 = np.meshgrid(t, t, indexing="ij")
    ww = np.outer(w, w)
    f = (mu + sigma * t1 - k) ** 2 + (mu + sigma * t2 - k) ** 2 - b
    exact = est.gaussian_quadratic_variances(mu, sigma, k, b, dim=2)
    for name, g in (("score_mu", f * t1 / sigma), ("score_sigma", f * (t1**2 - 1) / sigma)):
        m = np.sum(ww * g)
        np.testing.assert_allclose(np.sum(ww * g**2) - m**2, exact[name], rtol=1e-9)


@pytest.mark.parametrize("mu,sigma,k,b,dim", [(1.0, 1.0, 3.0, 2.0, 1), (0.0, 0.8, 0.5, 0.0, 4)])
def test_closed_form_variances_match_monte_carlo(mu, sigma, k, b, dim):
    f = lambda x: jnp.sum((x - k) ** 2)  # noqa: E731
    mean, std = jnp.full(dim, mu), jnp.full(dim, sigma)
    key = jax.random.key(7)
    sm, ss = est.score_function_samples(f, mean, std, key, 200_000, baseline=b)
    pm, ps = est.pathwise_samples(f, mean, std, key, 200_000)
    exact = est.gaussian_quadratic_variances(mu, sigma, k, b, dim)
    for name, g in (("score_mu", sm), ("score_sigma", ss), ("pathwise_mu", pm), ("pathwise_sigma", ps)):
        v, se = est.variance_and_se(g[:, 0])
        assert se < 0.05 * exact[name]
        assert abs(v - exact[name]) < 5 * se, name


def test_optimal_baselines_minimise_the_closed_form_variances():
    mu, sigma, k, dim = 1.0, 0.8, 2.5, 3
    b_mu, b_sigma = est.gaussian_quadratic_optimal_baselines(mu, sigma, k, dim)
    for name, b in (("score_mu", b_mu), ("score_sigma", b_sigma)):
        at = est.gaussian_quadratic_variances(mu, sigma, k, b, dim)[name]
        for delta in (-0.5, 0.5):
            assert est.gaussian_quadratic_variances(mu, sigma, k, b + delta, dim)[name] > at


# ----- baselines -----


def test_baseline_leaves_the_mean_unchanged():
    f, exact_mean, exact_std = COSTS["quadratic"]
    key = jax.random.key(11)
    plain = est.score_function_samples(f, MEAN, STD, key, N)
    based = est.score_function_samples(f, MEAN, STD, key, N, baseline=5.0)
    for a, b, exact in zip(plain, based, (exact_mean, exact_std), strict=False):
        diff = b - a  # paired: the same x in both, so this is -5 * score
        assert np.all(np.abs(np.asarray(diff.mean(0))) < 5 * _se(diff) + 1e-6)
        assert np.all(np.abs(np.asarray(b.mean(0)) - exact) < 5 * _se(b))
        assert np.all(5 * _se(diff) < 0.3)


def test_baseline_near_the_mean_cost_lowers_the_variance():
    f = lambda x: (x - 5.0) ** 2  # noqa: E731
    key = jax.random.key(5)
    b = float(est.gaussian_quadratic_expectation(1.0, 1.0, 5.0))
    plain = est.score_function_samples(f, 1.0, 1.0, key, 50_000)
    based = est.score_function_samples(f, 1.0, 1.0, key, 50_000, baseline=b)
    for a, c in zip(plain, based, strict=False):
        assert float(jnp.var(c)) < 0.6 * float(jnp.var(a))


# ----- the VAE: rows of encoder gradients, one per draw -----


def _tiny_vae():
    return VAE(in_features=8, hidden=6, latent=2, rngs=nnx.Rngs(0))


def _tiny_batch():
    return jax.random.bernoulli(jax.random.key(2), 0.4, (3, 8)).astype(jnp.float32)


def _grey(n=4):
    return np.random.default_rng(0).uniform(0, 1, (n, 784)).astype(np.float32)


VAE_SAMPLES = 20_000
# (estimator, baseline) -> the loss whose encoder gradient is that estimator
VAE_VARIANTS = {
    ("pathwise", 0.0): losses.pathwise_loss,
    ("score", 0.0): losses.score_function_loss,
    ("score", "batch"): functools.partial(losses.score_function_loss, baseline="batch"),
    ("score", "posterior_mean"): functools.partial(losses.score_function_loss, baseline="posterior_mean"),
}


@pytest.fixture(scope="module")
def vae_rows():
    """Encoder-gradient rows of the tiny VAE for each estimator, computed once."""
    model, x = _tiny_vae(), _tiny_batch()
    return {
        variant: est.vae_encoder_grads(model, x, jax.random.key(i), VAE_SAMPLES, loss_fn, chunk_size=None)
        for i, (variant, loss_fn) in enumerate(VAE_VARIANTS.items())
    }


def test_vae_encoder_grads_has_one_row_per_sample_and_one_column_per_encoder_parameter(vae_rows):
    model = _tiny_vae()
    num_params = ravel_pytree(nnx.state(model.encoder))[0].size
    for rows in vae_rows.values():
        assert rows.shape == (VAE_SAMPLES, num_params)


@pytest.mark.parametrize("baseline", [0.0, "batch", "posterior_mean"])
def test_vae_score_and_pathwise_means_agree_within_monte_carlo_error(vae_rows, baseline):
    pw, sf = vae_rows[("pathwise", 0.0)], vae_rows[("score", baseline)]
    se = np.sqrt(_se(pw) ** 2 + _se(sf) ** 2)
    signal = np.abs(np.asarray(pw.mean(0))) / np.maximum(_se(pw), 1e-12)
    assert np.max(signal) > 10, "no clear signal to compare"
    np.testing.assert_array_less(np.abs(np.asarray(pw.mean(0) - sf.mean(0))), 5 * se + 1e-6)


def test_vae_score_baselines_lower_the_encoder_gradient_variance(vae_rows):
    tv = {
        b: est.gradient_summary(est.row_moments(vae_rows[("score", b)]))["total_variance"]
        for b in (0.0, "batch", "posterior_mean")
    }
    assert tv["posterior_mean"] < 0.5 * tv[0.0]
    assert tv["batch"] < tv[0.0]


def test_streamed_moments_equal_the_moments_of_the_rows(vae_rows):
    variant = ("score", "posterior_mean")
    i = list(VAE_VARIANTS).index(variant)  # the fixture's key for these rows
    streamed = est.vae_encoder_grad_moments(
        _tiny_vae(), _tiny_batch(), jax.random.key(i), VAE_SAMPLES, VAE_VARIANTS[variant], chunk_size=VAE_SAMPLES // 4
    )
    direct = est.row_moments(vae_rows[variant])
    assert streamed["num_samples"] == VAE_SAMPLES
    np.testing.assert_allclose(streamed["mean"], direct["mean"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(streamed["variance"], direct["variance"], rtol=1e-3, atol=1e-5)


def test_gradient_summary_snr_of_known_rows():
    # rows = 1 + N(0, 1) in 4 coordinates: ||E g|| = 2, tr Cov = 4, SNR = 1.
    rows = 1.0 + jax.random.normal(jax.random.key(0), (50_000, 4))
    s = est.gradient_summary(est.row_moments(rows))
    assert abs(s["total_variance"] - 4.0) < 0.05
    assert abs(s["signal_norm"] - 2.0) < 0.02
    assert abs(s["snr"] - 1.0) < 0.02


def test_variance_and_se_of_normal_samples_matches_theory():
    g = np.random.default_rng(0).normal(0.0, 2.0, 200_000)
    v, se = est.variance_and_se(g)
    assert v == pytest.approx(4.0, abs=5 * se)
    assert se == pytest.approx(np.sqrt(2 * 16 / len(g)), rel=0.05)  # sqrt(2 sigma^4 / n) for a normal


# ----- K samples per image: pathwise average, sticking the landing, leave-one-out score -----

K = 4
K_VARIANTS = {
    "pathwise": functools.partial(losses.pathwise_loss, num_samples=K),
    "stl": functools.partial(losses.sticking_the_landing_loss, num_samples=K),
    "rloo": functools.partial(losses.leave_one_out_score_loss, num_samples=K),
}


@pytest.fixture(scope="module")
def k_rows():
    """Encoder-gradient rows of the tiny VAE with K samples per image, one key per estimator."""
    model, x = _tiny_vae(), _tiny_batch()
    return {
        name: est.vae_encoder_grads(model, x, jax.random.key(100 + i), VAE_SAMPLES, loss_fn, chunk_size=None)
        for i, (name, loss_fn) in enumerate(K_VARIANTS.items())
    }


@pytest.mark.parametrize("estimator", ["stl", "rloo"])
def test_k_sample_estimator_mean_equals_the_pathwise_gradient_within_monte_carlo_error(k_rows, estimator):
    # STL drops a zero-mean score term; RLOO's baseline is free of the sample it multiplies:
    # both estimate the gradient of the ELBO, the one the pathwise rows estimate.
    pw, other = k_rows["pathwise"], k_rows[estimator]
    se = np.sqrt(_se(pw) ** 2 + _se(other) ** 2)
    signal = np.abs(np.asarray(pw.mean(0))) / np.maximum(_se(pw), 1e-12)
    assert np.max(signal) > 10, "no clear signal to compare"
    np.testing.assert_array_less(np.abs(np.asarray(pw.mean(0) - other.mean(0))), 5 * se + 1e-6)


def test_pathwise_average_of_k_samples_divides_the_variance_by_k(vae_rows, k_rows):
    one = est.gradient_summary(est.row_moments(vae_rows[("pathwise", 0.0)]))["total_variance"]
    avg = est.gradient_summary(est.row_moments(k_rows["pathwise"]))["total_variance"]
    assert one / avg == pytest.approx(K, rel=0.1)


def test_leave_one_out_baseline_lowers_the_score_function_variance(vae_rows, k_rows):
    # K single-sample estimates without a baseline, averaged, would have 1/K of the variance
    # of one; the leave-one-out baseline must do much better than that at the same K.
    plain = est.gradient_summary(est.row_moments(vae_rows[("score", 0.0)]))["total_variance"]
    rloo = est.gradient_summary(est.row_moments(k_rows["rloo"]))["total_variance"]
    assert rloo < 0.5 * plain / K


# ----- what the VAE estimators refuse -----


def test_vae_encoder_grads_refuses_a_loss_that_is_not_a_function_and_names_one_to_pass():
    with pytest.raises(TypeError, match=r"loss_fn must be a loss function such as losses\.pathwise_loss"):
        est.vae_encoder_grads(_tiny_vae(), _tiny_batch(), jax.random.key(0), 2, "pathwise")


def test_gradient_estimators_reject_uint8_images():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    images = np.zeros((2, 784), np.uint8)
    with pytest.raises(ValueError, match="data.to_float"):
        est.vae_encoder_grads(model, images, jax.random.key(0), 4)


def test_gradient_estimators_reject_pixels_outside_the_unit_interval():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        est.vae_encoder_grad_moments(model, _grey(2) - 1, jax.random.key(0), 4, chunk_size=2)


def test_streamed_moments_need_a_whole_number_of_chunks():
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        est.vae_encoder_grad_moments(_tiny_vae(), _tiny_batch(), jax.random.key(0), 10, chunk_size=4)


# ----- the reparameterization trick: the encoder's gradient through the sample


def test_without_reparameterisation_the_encoder_gets_no_gradient_from_the_sample():
    model = VAE(in_features=12, hidden=8, latent=3, rngs=nnx.Rngs(0))
    x = jax.random.bernoulli(jax.random.key(0), 0.4, (4, 12)).astype(jnp.float32)
    plain = est.reconstruction_grads(model, x, jax.random.key(1), False)
    trick = est.reconstruction_grads(model, x, jax.random.key(1), True)
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(plain["encoder"]))
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(trick["encoder"]))


def test_the_decoder_gets_the_same_gradient_with_or_without_the_trick():
    model = VAE(in_features=12, hidden=8, latent=3, rngs=nnx.Rngs(0))
    x = jax.random.bernoulli(jax.random.key(0), 0.4, (4, 12)).astype(jnp.float32)
    plain = est.reconstruction_grads(model, x, jax.random.key(1), False)
    trick = est.reconstruction_grads(model, x, jax.random.key(1), True)
    for a, b in zip(jax.tree.leaves(plain["decoder"]), jax.tree.leaves(trick["decoder"]), strict=False):
        np.testing.assert_array_equal(a, b)
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(plain["decoder"]))
