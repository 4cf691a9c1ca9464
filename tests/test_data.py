"""vae_lib.data: the Fashion-MNIST arrays, and images -> model input (scaled, checked, binarized, batched)."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO

from vae_lib import data


def _grey(n=4):
    return np.random.default_rng(0).uniform(0, 1, (n, 784)).astype(np.float32)


def test_train_split_has_official_shape_dtype_and_first_labels(fashion_train):
    images, labels = fashion_train
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and np.issubdtype(labels.dtype, np.integer)
    assert labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_test_split_has_1000_images_per_class(fashion_test):
    images, labels = fashion_test
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_fashion_mnist("validation")


def test_importing_data_imports_neither_tensorflow_nor_the_command_lines():
    script = (
        "import sys, vae_lib.data;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')"
        " or m.startswith('vae_lib.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


# ------------------------------------------------------------ images -> model input


def test_to_float_scales_to_unit_interval_and_flattens(fashion_test):
    x = data.to_float(fashion_test[0][:5])
    assert x.shape == (5, 784) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.99


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


def test_check_images_rejects_images_of_the_wrong_rank():
    with pytest.raises(ValueError, match=r"\(N, 28, 28\) or \(N, 784\)"):
        data.check_images(np.zeros((2, 2, 28, 28), np.uint8), "fit")


def test_binarize_is_bernoulli_of_the_intensity():
    x = np.full((200_000,), 0.3, np.float32)
    b = np.asarray(data.binarize(jax.random.key(0), x))
    assert set(np.unique(b).tolist()) <= {0.0, 1.0}
    assert abs(b.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / b.size)


def test_binarize_draws_fresh_samples_for_fresh_keys():
    x = np.full((1000,), 0.5, np.float32)
    a = np.asarray(data.binarize(jax.random.key(1), x))
    b = np.asarray(data.binarize(jax.random.key(2), x))
    assert not np.array_equal(a, b)


def test_batches_cover_every_example_once_and_follow_the_key():
    batches = data.batch_indices(jax.random.key(0), 1000, 100)
    flat = np.concatenate(batches)
    assert len(batches) == 10 and sorted(flat.tolist()) == list(range(1000))
    again = np.concatenate(data.batch_indices(jax.random.key(0), 1000, 100))
    other = np.concatenate(data.batch_indices(jax.random.key(1), 1000, 100))
    assert np.array_equal(flat, again) and not np.array_equal(flat, other)


def test_batches_drop_the_incomplete_last_batch_by_default():
    assert [len(b) for b in data.batch_indices(jax.random.key(0), 250, 100)] == [100, 100]
    assert [len(b) for b in data.batch_indices(jax.random.key(0), 250, 100, drop_last=False)] == [100, 100, 50]
