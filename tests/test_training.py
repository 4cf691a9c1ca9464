"""vae_lib.training on real Fashion-MNIST: training lowers the loss; bad runs stop clearly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vae_lib import evaluation, losses, training
from vae_lib.models import VAE, Autoencoder


def _finite(model) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(nnx.state(model)))


def test_short_training_lowers_the_test_negative_elbo(fashion_train, fashion_test):
    model = VAE(hidden=200, latent=10, rngs=nnx.Rngs(0))
    test_images = fashion_test[0][:2000]
    before = evaluation.evaluate(model, test_images, jax.random.key(1))["loss"]
    history = training.fit(
        model, fashion_train[0][:12800], key=jax.random.key(2), epochs=2, test_images=test_images, progress=False
    )
    after = evaluation.evaluate(model, test_images, jax.random.key(1))["loss"]
    assert after < before - 100, (before, after)  # about 543 -> 300 nats here
    assert history["epoch"] == [1, 2] and history["train_loss"][1] < history["train_loss"][0]
    assert len(history["test_loss"]) == 2 and abs(history["test_loss"][-1] - after) < 2.0


def test_history_terms_add_up_to_the_loss(fashion_train):
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    h = training.fit(model, fashion_train[0][:1280], key=jax.random.key(0), epochs=1, progress=False)
    assert h["train_loss"][0] == pytest.approx(h["train_kl"][0] - h["train_log_px_given_z"][0], rel=1e-5)


def test_same_seed_gives_the_same_training_run(fashion_train):
    losses = []
    for _ in range(2):
        model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(3))
        losses.append(
            training.fit(model, fashion_train[0][:1280], key=jax.random.key(4), epochs=1, progress=False)["train_loss"]
        )
    assert losses[0] == losses[1]


def test_evaluation_samples_z_instead_of_using_the_posterior_mean(fashion_test):
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    images = fashion_test[0][:500]
    a = evaluation.evaluate(model, images, jax.random.key(0))["loss"]
    b = evaluation.evaluate(model, images, jax.random.key(1))["loss"]
    assert a != b  # a different key draws different z (and binarization)


def test_autoencoder_trains_with_the_same_step(fashion_train):
    model = Autoencoder(hidden=(), latent=16, rngs=nnx.Rngs(0))
    h = training.fit(
        model,
        fashion_train[0][:6400],
        key=jax.random.key(0),
        epochs=2,
        progress=False,
        loss_fn=losses.autoencoder_loss,
        binarize=False,
    )
    assert h["train_loss"][1] < h["train_loss"][0]


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_parameters(fashion_train):
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    with pytest.raises(training.NonFiniteLossError, match=r"non-finite at step \d+") as info:
        training.fit(
            model, fashion_train[0][:2560], key=jax.random.key(0), epochs=2, tx=optax.sgd(1e12), progress=False
        )
    assert info.value.step >= 1
    assert _finite(model)


def test_fit_rejects_float_pixels_outside_unit_interval(fashion_train):
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    bad = fashion_train[0][:256].astype(np.float32)  # 0..255, not divided by 255
    with pytest.raises(ValueError, match=r"floats in \[0, 1\].*Divide by 255"):
        training.fit(model, bad, key=jax.random.key(0), epochs=1, progress=False)


def test_fit_rejects_nan_pixels():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    bad = np.full((256, 784), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        training.fit(model, bad, key=jax.random.key(0), epochs=1, progress=False)


def test_fit_rejects_images_that_do_not_fit_the_model(fashion_train):
    model = VAE(in_features=100, hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, 100\); got shape \(128, 784\)"):
        training.fit(model, fashion_train[0][:256], key=jax.random.key(0), epochs=1, progress=False)
