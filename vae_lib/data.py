"""Fashion-MNIST as numpy arrays: reading and verifying it, plus the small transforms the series uses.

Where :func:`load_fashion_mnist` finds the data, in order:

1. Local IDX files (the format the dataset is published in, gzipped or not):
   the folder named by the environment variable ``VAE_LIB_DATA_DIR`` when it is set
   (then it is the only local place looked at); otherwise the folder of the
   Debian/Ubuntu package ``dataset-fashion-mnist`` and then vae_lib's own cache.
2. tensorflow-datasets' ``fashion_mnist``, which downloads when online (through
   :mod:`vae_lib.fetch`, imported only then). What it returns is written to the cache
   as IDX files, so the next load needs neither the network nor TensorFlow.

Whatever the source, the decoded arrays are checked against a recorded SHA-256
digest, so every reader of the series trains on the same bytes.

Getting the data onto a machine (Debian's package, a tfds download, ``make data``)
is :mod:`vae_lib.fetch`'s job; importing this module never imports it or TensorFlow.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "DEBIAN_DIR",
    "DIGESTS",
    "FILES",
    "SIZES",
    "DataError",
    "batch_indices",
    "binarize",
    "cache_dir",
    "check_images",
    "digest",
    "iterate_batches",
    "load_fashion_mnist",
    "local_dirs",
    "local_folder",
    "prepare_batch",
    "read_idx",
    "to_float",
    "verify",
    "write_idx",
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

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# The four IDX files of each split, (images, labels), as published (each also read as .gz).
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Number of examples in each split.
SIZES = {"train": 60000, "test": 10000}
# SHA-256 of images.tobytes() + labels.tobytes() (uint8, official order).
DIGESTS = {
    "train": "16d82e2b505296aa2b78bd5ea0992634f30419a4c97def7c907d154a35ac6157",
    "test": "9f1ec356a747bfe4ebab3cfb722d3694c9ca737e2570f6f90cf31d7b6fd689d4",
}
_HOW_TO_GET = (
    "Either install the Debian/Ubuntu package with "
    "`sudo apt-get install dataset-fashion-mnist` (or run `make data`), "
    "or connect to the internet so tensorflow-datasets can download it, "
    "or point VAE_LIB_DATA_DIR at a folder holding the four IDX files."
)


class DataError(RuntimeError):
    """The data set is missing, truncated or not the expected bytes."""


def cache_dir() -> Path:
    """vae_lib's own cache folder for data fetched through tfds."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vae_lib" / "fashion-mnist"


def local_dirs() -> list[Path]:
    """The local folders looked at, in order (see the module docstring)."""
    env = os.environ.get("VAE_LIB_DATA_DIR")
    if env:
        return [Path(env)]
    return [DEBIAN_DIR, cache_dir()]


def local_folder() -> Path | None:
    """The first of :func:`local_dirs` that holds all four IDX files (found by name, not decoded)."""
    for folder in local_dirs():
        if all(_find(folder, stem) for pair in FILES.values() for stem in pair):
            return folder
    return None


def _check_split(split: str) -> None:
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Decode one IDX file (gzipped or plain) into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises EOFError on a cut file
        raise DataError(
            f"{path} could not be read ({e}); the file looks truncated or corrupt. "
            f"Delete it and fetch it again. {_HOW_TO_GET}"
        ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise DataError(
            f"{path} is truncated: its header promises {expected} bytes of data "
            f"for shape {shape}, but {len(body)} are there. Fetch it again."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (the inverse of :func:`read_idx`)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wb") as f:
        f.write(header + array.tobytes())
    tmp.replace(path)


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the decoded arrays (images bytes, then labels bytes)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def verify(split: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Raise :class:`DataError` unless the arrays are the official Fashion-MNIST split."""
    n = SIZES[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataError(
            f"Fashion-MNIST {split} from {source} has images {images.shape} and "
            f"labels {labels.shape}; expected ({n}, 28, 28) and ({n},)."
        )
    got = digest(images, labels)
    if got != DIGESTS[split]:
        raise DataError(
            f"Fashion-MNIST {split} from {source} is not the official data "
            f"(SHA-256 {got[:16]}..., expected {DIGESTS[split][:16]}...). "
            f"Delete those files and fetch them again. {_HOW_TO_GET}"
        )


def _load_local(split: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    img_stem, lab_stem = FILES[split]
    for folder in local_dirs():
        img, lab = _find(folder, img_stem), _find(folder, lab_stem)
        if img is None and lab is None:
            continue
        if img is None or lab is None:
            missing = img_stem if img is None else lab_stem
            raise DataError(f"{folder} holds only half of the {split} split: {missing}(.gz) is missing. {_HOW_TO_GET}")
        return read_idx(img), read_idx(lab).astype(np.int64), str(folder)
    return None


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` ("train": 60000 or "test": 10000) as `(images, labels)`.

    images: uint8 array (N, 28, 28) with values 0..255; labels: int64 array (N,) of
    class indices into :data:`CLASS_NAMES`, in the official order. See the module
    docstring for where the data comes from. Raises :class:`DataError` with the remedies
    when no source has it (offline with no local files: in a few seconds).
    """
    _check_split(split)
    found = _load_local(split)
    if found is not None:
        images, labels, source = found
        verify(split, images, labels, source)
        return images, labels
    from vae_lib import fetch  # here, not at the top: local loads never import fetch (nor TensorFlow)

    images, labels = fetch.fashion_mnist_from_tfds(split)
    verify(split, images, labels, "tensorflow-datasets")
    target = local_dirs()[0] if os.environ.get("VAE_LIB_DATA_DIR") else cache_dir()
    try:  # keep a copy so later loads need neither the network nor TensorFlow
        img_stem, lab_stem = FILES[split]
        write_idx(target / (img_stem + ".gz"), images)
        write_idx(target / (lab_stem + ".gz"), labels.astype(np.uint8))
    except OSError:
        pass
    return images, labels


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


def iterate_batches(
    key, images: np.ndarray, batch_size: int, labels: np.ndarray | None = None, drop_last: bool = True
) -> Iterator:
    """Yield shuffled batches of `images` (and `labels`, when given), seeded by `key`."""
    for idx in batch_indices(key, len(images), batch_size, drop_last):
        yield images[idx] if labels is None else (images[idx], labels[idx])
