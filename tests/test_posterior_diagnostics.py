"""vae_lib.posterior_diagnostics: active units and the aggregate posterior's split of the KL (notebook 06)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_lib import objectives, posterior_diagnostics


def test_active_units_counts_dimensions_whose_posterior_mean_moves_with_x():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1, 500), rng.normal(0, 0.3, 500), rng.normal(0, 0.05, 500)], axis=1)
    assert posterior_diagnostics.active_units(means) == 2  # variances 1, 0.09, 0.0025 against 0.01
    assert posterior_diagnostics.active_units(means, threshold=0.001) == 3


def test_identical_posteriors_carry_no_information_so_the_kl_is_all_marginal():
    means, logvars = np.tile([[0.5, -1.0]], (400, 1)), np.tile([[-1.0, 0.3]], (400, 1))
    out = posterior_diagnostics.kl_decomposition(means, logvars, jax.random.key(0), draws=100)
    assert abs(out["mutual_information"]) < 0.02  # zero, up to the Monte Carlo error of the marginal KL


def test_far_apart_sharp_posteriors_carry_log_n_nats():
    n = 50
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(5.0)), -1).reshape(n, 2) - [4.5, 2.0]
    means = grid  # codes 1 apart, sd 0.01: no two posteriors overlap
    logvars = np.full((n, 2), 2 * math.log(0.01))
    out = posterior_diagnostics.kl_decomposition(means, logvars, jax.random.key(0), draws=400)
    assert out["mutual_information"] == pytest.approx(math.log(n), abs=0.03)  # up to Monte Carlo error
    assert out["average_kl"] == pytest.approx(out["mutual_information"] + out["marginal_kl"])


def test_the_aggregate_density_of_one_posterior_is_that_gaussian_whatever_the_chunk():
    z = jax.random.normal(jax.random.key(0), (37, 3))
    m, lv = jnp.array([[0.2, -0.4, 1.0]]), jnp.array([[0.1, -0.3, 0.5]])
    one = objectives.gaussian_log_density(z, m, lv)
    assert jnp.allclose(posterior_diagnostics.aggregate_log_density(z, m, lv, chunk=5), one, atol=1e-5)


def test_diagnostics_reject_codes_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, J\)"):
        posterior_diagnostics.active_units(np.zeros(10))
    with pytest.raises(ValueError, match="same encoder call"):
        posterior_diagnostics.kl_decomposition(np.zeros((5, 2)), np.zeros((5, 3)), jax.random.key(0))


def test_the_moment_matched_kl_of_one_gaussian_is_its_kl_to_the_prior():
    means, logvars = np.tile([[0.5, -1.0]], (400, 1)), np.tile([[-1.0, 0.3]], (400, 1))
    exact = float(objectives.kl_to_standard_normal(jnp.asarray(means[:1]), jnp.asarray(logvars[:1]))[0])
    assert posterior_diagnostics.moment_matched_kl(means, logvars) == pytest.approx(exact, rel=1e-6)


def test_the_moment_matched_kl_sees_correlation_between_the_codes():
    t = np.linspace(-1.5, 1.5, 300)
    means = np.stack([t, t], axis=1)  # codes on a line: Sigma = [[v + a, v], [v, v + a]]
    logvars = np.full((300, 2), math.log(0.1))
    v, a = np.var(t), 0.1
    expected = 0.5 * (2 * (v + a) - 2 - math.log((v + a) ** 2 - v**2))
    assert posterior_diagnostics.moment_matched_kl(means, logvars) == pytest.approx(expected, rel=1e-6)


def test_the_marginal_kl_bounds_bracket_the_mixture_estimate():
    rng = np.random.default_rng(1)
    means, logvars = rng.normal(0, 1.3, (300, 3)), rng.normal(-2, 0.3, (300, 3))
    out = posterior_diagnostics.marginal_kl_bounds(means, logvars, jax.random.key(0), draws=20)
    assert 0 < out["lower"] < out["upper"] and out["log_n"] == pytest.approx(math.log(300))


def test_an_active_unit_carries_more_than_half_the_threshold_in_nats():
    rng = np.random.default_rng(2)
    means, logvars = rng.normal(0, 0.11, (2000, 4)) * [1, 0.5, 2, 0.1], rng.normal(0, 0.05, (2000, 4))
    rate_j = np.mean(np.asarray(objectives.kl_per_dimension(jnp.asarray(means), jnp.asarray(logvars))), axis=0)
    activity = np.asarray(posterior_diagnostics.unit_activity(means))
    assert np.all(rate_j >= activity / 2)  # R_j >= A_j / 2, so A_j > 0.01 means R_j > 0.005 nats
