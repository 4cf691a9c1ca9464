"""vae_lib.gaps: the approximation and amortization gaps (notebook 06b)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import gaps, models
from vae_lib import linear_gaussian as lg


def small_vae(seed=0, latent=3):
    return models.VAE(hidden=(16, 8), latent=latent, rngs=nnx.Rngs(seed))


def binary_images(n=12, d=784, seed=0):
    return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.3, (n, d)), np.float32)


def test_optimising_each_images_q_raises_its_elbo_from_the_encoders():
    model, x = small_vae(latent=4), jnp.asarray(binary_images(8))
    mean, logvar = model.encoder(x)
    key = jax.random.key(1)
    before = gaps.elbo_of_q(model, x, mean, logvar, key, samples=500)
    m2, lv2, trace = gaps.optimize_q(model, x, mean, logvar, jax.random.key(2), steps=200, learning_rate=0.05)
    after = gaps.elbo_of_q(model, x, m2, lv2, key, samples=500)
    assert trace.shape == (200,) and float(trace[-20:].mean()) < float(trace[:20].mean())
    assert float(jnp.mean(after - before)) > 0.1


def test_the_two_gaps_add_up_to_the_total():
    out = gaps.split_gap([-100.0, -90.0], [-110.0, -95.0], [-104.0, -92.0])
    means = {k: v for k, v in out.items() if not k.endswith("_se")}
    assert means == pytest.approx({"total": 7.5, "approximation": 3.0, "amortization": 4.5})


def test_each_gap_comes_with_its_standard_error_over_the_images():
    out = gaps.split_gap([-100.0, -90.0], [-110.0, -95.0], [-104.0, -92.0])
    # per-image totals 10 and 5: sd 3.536 (ddof 1) / sqrt(2) = 2.5
    assert out["total_se"] == pytest.approx(2.5) and out["approximation_se"] == pytest.approx(1.0)
    assert gaps.split_gap([-1.0], [-2.0], [-1.5])["amortization_se"] == 0.0


def test_a_linear_encoder_trained_long_has_no_amortization_gap_and_the_exact_approximation_gap():
    model = lg.random_model(jax.random.key(2), dim_x=3, dim_z=2, s2=1.0)
    xs = lg.sample_x(model, jax.random.key(5), 200)
    S = lg.posterior(model, xs[0])[1]
    rho = S[0, 1] / jnp.sqrt(S[0, 0] * S[1, 1])
    early, late = gaps.linear_encoder_gaps(model, xs, 30), gaps.linear_encoder_gaps(model, xs, 3000)
    assert late["approximation"] == pytest.approx(float(-0.5 * jnp.log(1 - rho**2)), abs=1e-4)
    assert abs(late["amortization"]) < 1e-3 < early["amortization"]
    assert early["approximation"] == pytest.approx(late["approximation"], abs=1e-4)  # q* does not depend on the encoder


def test_elbo_of_q_rejects_parameters_for_another_number_of_images():
    with pytest.raises(ValueError, match="same N images"):
        gaps.elbo_of_q(small_vae(), binary_images(4), jnp.zeros((3, 3)), jnp.zeros((3, 3)), jax.random.key(0))
