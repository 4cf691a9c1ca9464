"""Bad images are rejected at the host-side entry points, with a message that says what to do.

Inside compiled code values cannot be checked without slowing every step, so the checks sit
where data enters from the host: data.to_float, training.fit, evaluation.evaluate, the
plotting functions and the gradient estimators. Shapes are checked everywhere.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from vae_lib import data, estimators, evaluation, plotting
from vae_lib.models import VAE


def _grey(n=4):
    return np.random.default_rng(0).uniform(0, 1, (n, 784)).astype(np.float32)


def test_to_float_scales_uint8_and_passes_floats_in_the_unit_interval():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    np.testing.assert_allclose(data.to_float(images), [[0.0, 1.0, 0.2, 0.4]])
    grey = _grey()
    np.testing.assert_array_equal(data.to_float(grey), grey)


def test_to_float_rejects_floats_outside_the_unit_interval_and_says_divide_by_255():
    with pytest.raises(ValueError, match=r"got values in \[.*\]\. Divide by 255"):
        data.to_float(_grey() * 255)


def test_to_float_rejects_nan():
    x = _grey()
    x[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        data.to_float(x)


def test_evaluate_rejects_pixels_outside_the_unit_interval():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"evaluate expects uint8 pixels or floats in \[0, 1\]"):
        evaluation.evaluate(model, _grey() * 255, jax.random.key(0))


def test_plotting_rejects_pixels_outside_the_unit_interval_instead_of_guessing():
    with pytest.raises(ValueError, match=r"plotting expects uint8 pixels or floats in \[0, 1\]"):
        plotting.tile(_grey() * 2, ncols=2)


def test_gradient_estimators_reject_uint8_images():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    images = np.zeros((2, 784), np.uint8)
    with pytest.raises(ValueError, match="data.to_float"):
        estimators.vae_encoder_grads(model, images, jax.random.key(0), 4)


def test_gradient_estimators_reject_pixels_outside_the_unit_interval():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        estimators.vae_encoder_grad_moments(model, _grey(2) - 1, jax.random.key(0), 4, chunk_size=2)


def test_images_of_the_wrong_rank_are_rejected():
    with pytest.raises(ValueError, match=r"\(N, 28, 28\) or \(N, 784\)"):
        data.check_images(np.zeros((2, 2, 28, 28), np.uint8), "fit")
