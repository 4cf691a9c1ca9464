"""vae_lib.gaps: the approximation and amortization gaps (notebook 06)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import gaps, models


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
    assert out == pytest.approx({"total": 7.5, "approximation": 3.0, "amortization": 4.5})


def test_elbo_of_q_rejects_parameters_for_another_number_of_images():
    with pytest.raises(ValueError, match="same N images"):
        gaps.elbo_of_q(small_vae(), binary_images(4), jnp.zeros((3, 3)), jnp.zeros((3, 3)), jax.random.key(0))
