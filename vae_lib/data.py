"""Fashion-MNIST as the models read it: loading the arrays, and images -> model input.

:func:`load_fashion_mnist` returns the real data set as uint8 arrays (finding, verifying and
caching the files is :mod:`vae_lib.store.fashion_mnist`'s job); the functions below turn
those images into what a model reads: float32 vectors in [0, 1], dynamically binarized,
shuffled into batches.
"""

from __future__ import annotations

import numpy as np

from vae_lib.store import fashion_mnist

__all__ = [
    "CLASS_NAMES",
    "batch_indices",
    "binarize",
    "check_images",
    "load_fashion_mnist",
    "prepare_batch",
    "to_float",
]

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` ("train": 60000 or "test": 10000) as `(images, labels)`.

    images: uint8 array (N, 28, 28) with values 0..255; labels: int64 array (N,) of class
    indices into :data:`CLASS_NAMES`, in the official order, verified against a recorded
    digest. Raises :class:`vae_lib.store.fashion_mnist.DataError` with the remedies when no
    source has it (offline with no local files: in a few seconds).
    """
    return fashion_mnist.load(split)


# ------------------------------------------------------------ images -> model input
# The one place that turns images into what a model reads: float32 vectors in [0, 1].
# Host-side functions check values (check_images, to_float); prepare_batch runs inside
# compiled steps, where values cannot be checked, so fit and evaluate check first.


def _check_pixel_values(images: np.ndarray, who: str) -> None:
    if images.dtype == np.uint8 or images.dtype == np.bool_ or images.size == 0:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{who} expects uint8 pixels or floats in [0, 1]; got dtype {images.dtype}. "
            f"Convert 0..255 integers with .astype(np.uint8)."
        )
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{who} images contain NaN or infinite values; expected floats in [0, 1].")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{who} expects uint8 pixels or floats in [0, 1] (the Bernoulli likelihood); "
            f"got values in [{lo:g}, {hi:g}]. Divide by 255 (or pass the uint8 images)."
        )


def _scale(x, xp):
    """uint8 0..255 -> float32 in [0, 1]; floats -> float32. ``xp`` is numpy or jax.numpy."""
    return x.astype(xp.float32) / 255.0 if x.dtype == xp.uint8 else x.astype(xp.float32)


def check_images(images, who: str = "images") -> None:
    """Check a batch of images on the host before it enters compiled code.

    Args:
        images: uint8 (N, 28, 28) or (N, 784), or floats of those shapes in [0, 1].
        who: the name the error message starts with.

    Raises:
        ValueError: another rank, NaN or infinite values, or floats outside [0, 1]; the
            message says what was expected and how to fix it.
    """
    images = np.asarray(images)
    if images.ndim not in (2, 3):
        raise ValueError(f"{who} expects images of shape (N, 28, 28) or (N, 784); got {images.shape}.")
    _check_pixel_values(images, who)


def to_float(images, who: str = "to_float") -> np.ndarray:
    """Images -> float32 vectors (..., 784) in [0, 1], on the host, values checked.

    Args:
        images: uint8 (..., H, W) (divided by 255), or floats (..., 28, 28) or (..., D)
            already in [0, 1].
        who: the name an error message starts with.

    Returns:
        A float32 NumPy array with the last two axes flattened.
    """
    images = np.asarray(images)
    _check_pixel_values(images, who)
    if images.ndim >= 2 and (images.dtype == np.uint8 or images.shape[-2:] == (28, 28)):
        images = images.reshape(*images.shape[:-2], -1)  # uint8 images are always (..., H, W)
    return _scale(images, np)


def binarize(key, x):
    """Dynamic binarization: each pixel becomes 1 with probability equal to its intensity.

    `x` holds intensities in [0, 1]; a fresh `key` (for instance one per epoch or per
    batch) gives a fresh binary image, so the model sees a Bernoulli sample of the data
    rather than one fixed thresholding of it.
    """
    import jax
    import jax.numpy as jnp

    return jax.random.bernoulli(key, x).astype(jnp.float32)


def prepare_batch(images, key, binarize_pixels: bool):
    """Inside a compiled step: a batch uint8 (B, 28, 28) or float (B, 784) -> float32 (B, 784).

    Scaled to [0, 1] and, with ``binarize_pixels``, binarized with ``key``. Values are not
    checked here (they are abstract inside ``jax.jit``): :func:`check_images` checks them
    on the host first.
    """
    import jax.numpy as jnp

    x = _scale(images.reshape(images.shape[0], -1), jnp)
    return binarize(key, x) if binarize_pixels else x


def batch_indices(key, num_examples: int, batch_size: int, drop_last: bool = True) -> list[np.ndarray]:
    """A seeded shuffle of range(num_examples) cut into batches of `batch_size` indices."""
    import jax

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.asarray(jax.random.permutation(key, num_examples))
    stop = num_examples - num_examples % batch_size if drop_last else num_examples
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
