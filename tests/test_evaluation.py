"""vae_lib.evaluation: the test negative ELBO, one fixed binarization, and the bound L_k over a test set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import data, evaluation, models, objectives
from vae_lib.models import VAE


def small_vae(seed=0, latent=3):
    return models.VAE(hidden=(16, 8), latent=latent, rngs=nnx.Rngs(seed))


def binary_images(n=12, d=784, seed=0):
    return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.3, (n, d)), np.float32)


def z_blind_vae(latent=2, seed=0):
    """A VAE whose decoder ignores z (first decoder layer zero), so p(x|z) = p(x) exactly."""
    model = small_vae(seed, latent)
    first = model.decoder.net.layers[0]
    first.kernel[...] = jnp.zeros_like(first.kernel[...])
    return model


def _grey(n=4):
    return np.random.default_rng(0).uniform(0, 1, (n, 784)).astype(np.float32)


def test_evaluate_scores_a_z_sampled_from_q_with_the_documented_key_not_the_posterior_mean(fashion_test):
    # One batch (batch_size >= N), no binarization: the only randomness is z, drawn with the
    # second half of jax.random.split(jax.random.fold_in(key, 0)).
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    images, key = fashion_test[0][:500], jax.random.key(0)
    out = evaluation.evaluate(model, images, key, batch_size=500, binarize=False)
    x = jnp.asarray(data.to_float(images))
    _, k_z = jax.random.split(jax.random.fold_in(key, 0))
    mean, logvar = model.encoder(x)
    sampled = objectives.bernoulli_log_likelihood(x, model.decoder(objectives.reparameterize(k_z, mean, logvar)))
    at_the_mean = objectives.bernoulli_log_likelihood(x, model.decoder(mean))
    assert out["log_px_given_z"] == pytest.approx(float(jnp.mean(sampled)), rel=1e-5)
    assert abs(out["log_px_given_z"] - float(jnp.mean(at_the_mean))) > 0.1
    assert out["kl"] == pytest.approx(float(jnp.mean(objectives.kl_to_standard_normal(mean, logvar))), rel=1e-5)


def test_evaluate_reports_the_loss_as_kl_minus_log_likelihood(fashion_test):
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    out = evaluation.evaluate(model, fashion_test[0][:300], jax.random.key(1), batch_size=128)
    assert out["loss"] == pytest.approx(out["kl"] - out["log_px_given_z"], rel=1e-5)


def test_evaluate_rejects_pixels_outside_the_unit_interval():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"evaluate expects uint8 pixels or floats in \[0, 1\]"):
        evaluation.evaluate(model, _grey() * 255, jax.random.key(0))


# ---------------------------------------------------------------- L_k over a test set


def test_log_likelihood_bound_is_exact_when_the_decoder_ignores_z_and_q_is_the_prior():
    model = z_blind_vae()
    for layer in (model.encoder.mean, model.encoder.logvar):  # q(z|x) = N(0, I) = p(z)
        layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
        layer.bias[...] = jnp.zeros_like(layer.bias[...])
    x = binary_images(6)
    exact = objectives.bernoulli_log_likelihood(x, model.decoder(jnp.zeros((6, 2))))
    out = evaluation.log_likelihood_bound(model, x, jax.random.key(0), k=40, batch_size=4, chunk=20)
    assert np.allclose(out["log_px"], exact, atol=1e-3) and np.allclose(out["elbo"], exact, atol=1e-3)


def test_log_likelihood_bound_approaches_log_px_from_below_as_k_grows():
    model = z_blind_vae()  # log w = log p(x) + log p(z) - log q(z|x): L_k -> log p(x), ELBO = log p(x) - KL
    # q = N(2, e I): off the prior's centre and wider than it, so the weights are bounded
    for layer, bias in ((model.encoder.mean, 2.0), (model.encoder.logvar, 1.0)):
        layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
        layer.bias[...] = jnp.full_like(layer.bias[...], bias)
    x = binary_images(40)
    exact = np.asarray(objectives.bernoulli_log_likelihood(x, model.decoder(jnp.zeros((40, 2)))))
    mean, logvar = model.encoder(jnp.asarray(x))
    kl = np.asarray(objectives.kl_to_standard_normal(mean, logvar))
    small = evaluation.log_likelihood_bound(model, x, jax.random.key(0), k=2, chunk=2)
    large = evaluation.log_likelihood_bound(model, x, jax.random.key(0), k=4000, chunk=500)
    assert abs(np.mean(large["log_px"] - exact)) < 0.03 and np.max(np.abs(large["log_px"] - exact)) < 0.3
    assert 0 <= np.mean(exact - large["log_px"]) < np.mean(exact - small["log_px"])
    assert abs(np.mean(large["elbo"] - (exact - kl))) < 0.03


def test_log_likelihood_bound_does_not_depend_on_the_batch_size():
    model, x = small_vae(), binary_images(10)
    a = evaluation.log_likelihood_bound(model, x, jax.random.key(5), k=60, batch_size=10, chunk=20)
    b = evaluation.log_likelihood_bound(model, x, jax.random.key(5), k=60, batch_size=3, chunk=20)
    assert np.allclose(a["log_px"], b["log_px"], atol=1e-4) and np.allclose(a["elbo"], b["elbo"], atol=1e-4)


def test_log_likelihood_bound_rejects_k_that_is_not_a_multiple_of_the_chunk():
    with pytest.raises(ValueError, match="multiple of chunk"):
        evaluation.log_likelihood_bound(small_vae(), binary_images(2), jax.random.key(0), k=100, chunk=30)


def test_binarize_once_gives_binary_images_that_follow_the_grey_levels():
    grey = np.full((200, 28, 28), 64, np.uint8)  # grey level 64/255
    x = evaluation.binarize_once(grey, jax.random.key(0))
    assert x.shape == (200, 784) and set(np.unique(x)) <= {0.0, 1.0}
    assert abs(x.mean() - 64 / 255) < 0.01
