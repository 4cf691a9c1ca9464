"""Fashion-MNIST (and MNIST) as numpy arrays, plus the small transforms the series uses.

Where the data comes from, in order:

1. Local IDX files (the format the dataset is published in, gzipped or not):
   the folder named by the environment variable ``VAE_LIB_DATA_DIR`` when it is set
   (then it is the only local place looked at); otherwise the folder of the
   Debian/Ubuntu package ``dataset-fashion-mnist`` and then vae_lib's own cache.
2. tensorflow-datasets' ``fashion_mnist``, which downloads when online. What it
   returns is written to the cache as IDX files, so the next load needs neither the
   network nor TensorFlow.

Whatever the source, the decoded arrays are checked against a recorded SHA-256
digest, so every reader of the series trains on the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SIZES = {"train": 60000, "test": 10000}
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


def _check_split(split: str) -> None:
    if split not in _FILES:
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
    n = _SIZES[split]
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
    img_stem, lab_stem = _FILES[split]
    for folder in local_dirs():
        img, lab = _find(folder, img_stem), _find(folder, lab_stem)
        if img is None and lab is None:
            continue
        if img is None or lab is None:
            missing = img_stem if img is None else lab_stem
            raise DataError(f"{folder} holds only half of the {split} split: {missing}(.gz) is missing. {_HOW_TO_GET}")
        return read_idx(img), read_idx(lab).astype(np.int64), str(folder)
    return None


def _online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to tfds' download host opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _import_tfds():
    """Import tensorflow-datasets quietly, keeping TensorFlow off any GPU."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow_datasets as tfds

    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    except Exception:  # noqa: BLE001 - TensorFlow is optional until tfds needs it
        pass
    return tfds


def load_from_tfds(name: str, split: str, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load a tfds image-classification data set as (uint8 images (N, 28, 28), int labels)."""
    tfds = _import_tfds()
    ds = tfds.load(name, split=split, as_supervised=True, download=download)
    chunks = list(tfds.as_numpy(ds.batch(10000)))
    if not chunks:
        raise DataError(f"tensorflow-datasets returned no examples for {name} {split}.")
    images = np.concatenate([np.asarray(c[0], dtype=np.uint8) for c in chunks])
    labels = np.concatenate([np.asarray(c[1], dtype=np.int64) for c in chunks])
    return images.reshape(-1, 28, 28), labels


def _load_tfds_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:  # already prepared by tfds on this machine: no network needed
        return load_from_tfds("fashion_mnist", split, download=False)
    except ImportError as e:
        raise DataError(
            f"Fashion-MNIST is not on this machine and tensorflow-datasets cannot run here ({e}). {_HOW_TO_GET}"
        ) from e
    except Exception:  # noqa: BLE001 - not prepared yet; fall through to a download
        pass
    if not _online():
        raise DataError(
            f"Fashion-MNIST was not found locally (looked in: "
            f"{', '.join(map(str, local_dirs()))}) and this machine is offline, so "
            f"tensorflow-datasets cannot download it. {_HOW_TO_GET}"
        )
    return load_from_tfds("fashion_mnist", split, download=True)


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
    images, labels = _load_tfds_fashion(split)
    verify(split, images, labels, "tensorflow-datasets")
    target = local_dirs()[0] if os.environ.get("VAE_LIB_DATA_DIR") else cache_dir()
    try:  # keep a copy so later loads need neither the network nor TensorFlow
        img_stem, lab_stem = _FILES[split]
        write_idx(target / (img_stem + ".gz"), images)
        write_idx(target / (lab_stem + ".gz"), labels.astype(np.uint8))
    except OSError:
        pass
    return images, labels


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits through tensorflow-datasets (online only: no offline copy is packaged).

    Same return convention as :func:`load_fashion_mnist`.
    """
    _check_split(split)
    try:
        return load_from_tfds("mnist", split, download=False)
    except ImportError as e:
        raise DataError(f"load_mnist needs tensorflow-datasets and TensorFlow ({e}).") from e
    except Exception:  # noqa: BLE001 - not prepared yet
        pass
    if not _online():
        raise DataError(
            "MNIST is only available through tensorflow-datasets, which needs a "
            "network connection the first time; this machine is offline. "
            "Use load_fashion_mnist, which works offline."
        )
    return load_from_tfds("mnist", split, download=True)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images (..., 28, 28) -> float32 vectors (..., 784) scaled to [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"to_float expects uint8 pixels 0..255, got dtype {images.dtype}.")
    return images.reshape(*images.shape[:-2], -1).astype(np.float32) / 255.0


def binarize(key, x):
    """Dynamic binarization: each pixel becomes 1 with probability equal to its intensity.

    `x` holds intensities in [0, 1]; a fresh `key` (for instance one per epoch or per
    batch) gives a fresh binary image, so the model sees a Bernoulli sample of the data
    rather than one fixed thresholding of it.
    """
    import jax
    import jax.numpy as jnp

    return jax.random.bernoulli(key, x).astype(jnp.float32)


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


def _local_folder() -> Path | None:
    """The first local folder that holds all four IDX files (found by name, not decoded)."""
    for folder in local_dirs():
        if all(_find(folder, stem) for pair in _FILES.values() for stem in pair):
            return folder
    return None


def _install_debian_package() -> bool:
    """apt-get install dataset-fashion-mnist (refreshing the package lists if needed)."""
    import subprocess

    install = ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"]
    return subprocess.run(install).returncode == 0 or (
        subprocess.run(["apt-get", "update", "-qq"]).returncode == 0 and subprocess.run(install).returncode == 0
    )


def _fetch_main() -> int:
    """`python -m vae_lib.data` (what `make data` runs): make Fashion-MNIST available.

    Nothing to do if local files are there; else Debian's package (as root, with apt);
    else tensorflow-datasets. Either way each split is loaded once, which verifies it.
    """
    import shutil
    import sys

    folder = _local_folder()
    if folder is None and not os.environ.get("VAE_LIB_DATA_DIR") and shutil.which("apt-get") and os.geteuid() == 0:
        print("Installing Debian's package dataset-fashion-mnist ...", flush=True)
        if _install_debian_package():
            folder = _local_folder()
    if folder is None:
        print("Fetching Fashion-MNIST through tensorflow-datasets ...", flush=True)
    try:
        for split in _FILES:
            load_fashion_mnist(split)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = folder if folder is not None else _local_folder()
    print(f"Fashion-MNIST is ready and verified (IDX files in {where}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(_fetch_main())
