"""vae_lib.models: shapes in and out, and clear errors for inputs that do not fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib.models import VAE, Autoencoder, Decoder, Encoder, count_params


def test_vae_returns_logits_sample_and_posterior_parameters():
    model = VAE(hidden=32, latent=4, rngs=nnx.Rngs(0))
    logits, z, mean, logvar = model(jnp.zeros((3, 784)), jax.random.key(0))
    assert logits.shape == (3, 784) and z.shape == mean.shape == logvar.shape == (3, 4)


def test_encoder_and_decoder_accept_several_hidden_layers():
    enc = Encoder(784, (64, 32), 5, rngs=nnx.Rngs(0))
    dec = Decoder(5, (64, 32), 784, rngs=nnx.Rngs(1))
    mean, _ = enc(jnp.ones((2, 784)))
    assert mean.shape == (2, 5) and dec(mean).shape == (2, 784)


def test_prior_samples_are_pixel_probabilities():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    images = model.sample(jax.random.key(1), 7)
    assert images.shape == (7, 784)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_reconstruct_decodes_the_posterior_mean_without_sampling():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(2), (3, 784))
    mean, logvar = model.encoder(x)
    assert float(jnp.min(jnp.exp(0.5 * logvar))) > 0.1  # a sampled z would land visibly elsewhere
    np.testing.assert_allclose(model.reconstruct(x), jax.nn.sigmoid(model.decoder(mean)), rtol=1e-6)
    sampled = jax.nn.sigmoid(model(x, jax.random.key(3))[0])
    assert float(jnp.max(jnp.abs(model.reconstruct(x) - sampled))) > 1e-3


def test_autoencoder_with_no_hidden_layer_is_the_notes_model():
    model = Autoencoder(hidden=(), latent=32, rngs=nnx.Rngs(0))
    assert len(model.encoder.layers) == 1 and len(model.decoder.layers) == 1
    assert model(jnp.zeros((4, 784))).shape == (4, 784)


def test_unflattened_images_get_an_error_that_says_how_to_flatten():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, 784\).*\(5, 28, 28\).*reshape"):
        model(jnp.zeros((5, 28, 28)), jax.random.key(0))


def test_wrong_feature_count_is_rejected_by_the_autoencoder():
    model = Autoencoder(hidden=8, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 784\); got shape \(5, 100\)"):
        model(jnp.zeros((5, 100)))


def test_decoder_rejects_latents_of_the_wrong_size():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"Decoder expects inputs of shape \(batch, 2\)"):
        model.decode(jnp.zeros((1, 3)))


def test_count_params_counts_every_weight_and_bias():
    model = Autoencoder(hidden=(), latent=3, rngs=nnx.Rngs(0))
    assert count_params(model) == (784 * 3 + 3) + (3 * 784 + 784)
