"""vae_lib.models: shapes in and out, and clear errors for inputs that do not fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from vae_lib import models
from vae_lib.models import VAE, Autoencoder, Decoder, Encoder, GatedDense, count_params


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


# ---------------------------------------------------------------- the gated VAE (the reference code's recipe)


def test_a_gated_dense_layer_is_a_linear_map_times_a_sigmoid_gate_and_nothing_else():
    layer = GatedDense(6, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 6))
    h = x @ layer.h.kernel[...] + layer.h.bias[...]
    g = x @ layer.g.kernel[...] + layer.g.bias[...]
    np.testing.assert_allclose(layer(x), h * jax.nn.sigmoid(g), rtol=1e-6)
    assert float(jnp.min(h * jax.nn.sigmoid(g))) < 0  # no ReLU after the gate: negative outputs pass


def test_the_gated_784_300_300_40_vae_has_the_reference_codes_layers_and_1116864_parameters():
    model = VAE(hidden=(300, 300), latent=40, gated=True, rngs=nnx.Rngs(0))
    gated = lambda a, b: 2 * (a * b + b)  # noqa: E731  two dense maps of a -> b
    dense = lambda a, b: a * b + b  # noqa: E731
    encoder = gated(784, 300) + gated(300, 300) + 2 * dense(300, 40)  # body, mean, log-variance
    decoder = gated(40, 300) + gated(300, 300) + dense(300, 784)
    assert count_params(model) == encoder + decoder == 1_116_864
    assert [type(layer) for layer in model.encoder.body.layers] == [GatedDense, GatedDense]
    assert [type(layer) for layer in model.decoder.net.layers] == [GatedDense, GatedDense, nnx.Linear]
    logits, z, mean, logvar = model(jnp.zeros((3, 784)), jax.random.key(0))
    assert logits.shape == (3, 784) and z.shape == mean.shape == logvar.shape == (3, 40)


def test_a_gated_encoder_clips_its_log_variance_to_the_range_minus_6_to_2():
    enc = Encoder(784, (32,), 8, gated=True, rngs=nnx.Rngs(0))
    x = 30.0 * jax.random.normal(jax.random.key(1), (64, 784))  # large inputs push the log-variance out
    unclipped = enc.logvar(enc.body(x))
    assert float(unclipped.min()) < -6 and float(unclipped.max()) > 2
    _, logvar = enc(x)
    assert models.LOGVAR_RANGE == (-6.0, 2.0)
    np.testing.assert_array_equal(logvar, jnp.clip(unclipped, -6.0, 2.0))


def test_a_gated_vae_initialises_every_kernel_he_normal():
    model = VAE(hidden=(300, 300), latent=40, gated=True, rngs=nnx.Rngs(0))
    kernels = [model.encoder.body.layers[0].h.kernel, model.decoder.net.layers[1].g.kernel, model.encoder.mean.kernel]
    for kernel in kernels:  # He: variance 2 / fan_in (a truncated normal, whose std he_normal corrects)
        fan_in = kernel.shape[0]
        assert float(jnp.std(kernel[...])) == pytest.approx(np.sqrt(2 / fan_in), rel=0.05)
    plain = VAE(hidden=(300, 300), latent=40, rngs=nnx.Rngs(0))  # LeCun normal: variance 1 / fan_in
    assert float(jnp.std(plain.encoder.body.layers[0].kernel[...])) == pytest.approx(np.sqrt(1 / 784), rel=0.05)


def test_the_default_vae_keeps_its_relu_layers_and_parameter_names():
    model = VAE(hidden=(8, 4), latent=2, rngs=nnx.Rngs(0))
    names = {"/".join(map(str, k)) for k in traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}
    layers = ["encoder/body/layers/0", "encoder/body/layers/1", "encoder/mean", "encoder/logvar"]
    layers += [f"decoder/net/layers/{i}" for i in range(3)]
    assert names == {f"{layer}/{p}" for layer in layers for p in ("kernel", "bias")}
    x = jax.random.uniform(jax.random.key(1), (3, 784))
    hidden = nnx.relu(model.encoder.body.layers[1](nnx.relu(model.encoder.body.layers[0](x))))
    np.testing.assert_allclose(model.encoder(x)[1], model.encoder.logvar(hidden), rtol=1e-6)
