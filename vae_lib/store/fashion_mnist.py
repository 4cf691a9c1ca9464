"""Fashion-MNIST on disk: finding, reading, verifying and caching the real data set.

Where :func:`load` finds the data, in order:

1. Local IDX files (the format the dataset is published in, gzipped or not):
   the folder named by the environment variable ``VAE_LIB_DATA_DIR`` when it is set
   (then it is the only local place looked at); otherwise the folder of the
   Debian/Ubuntu package ``dataset-fashion-mnist`` and then vae_lib's own cache.
2. tensorflow-datasets' ``fashion_mnist``, which downloads when online (tfds and TensorFlow
   are imported only then). What it returns is written to the cache as IDX files, so the
   next load needs neither the network nor TensorFlow.

Whatever the source, the decoded arrays are checked against a recorded SHA-256
digest, so every reader of the series trains on the same bytes. Installing Debian's package
is the command line's job (``python -m vae_lib.cli.fetch_data``, ``make data``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
from pathlib import Path
from types import ModuleType

import numpy as np

__all__ = [
    "DEBIAN_DIR",
    "DIGESTS",
    "FILES",
    "HOW_TO_GET",
    "SIZES",
    "DataError",
    "cache_dir",
    "digest",
    "fashion_mnist_from_tfds",
    "is_online",
    "load",
    "load_from_tfds",
    "local_dirs",
    "local_folder",
    "read_idx",
    "verify",
    "write_idx",
]

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
HOW_TO_GET = (
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
            f"Delete it and fetch it again. {HOW_TO_GET}"
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
    with gzip.open(tmp, "wb", compresslevel=1) as f:  # level 1: 18x faster than 9, a few % larger
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
            f"Delete those files and fetch them again. {HOW_TO_GET}"
        )


def _load_local(split: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    img_stem, lab_stem = FILES[split]
    for folder in local_dirs():
        img, lab = _find(folder, img_stem), _find(folder, lab_stem)
        if img is None and lab is None:
            continue
        if img is None or lab is None:
            missing = img_stem if img is None else lab_stem
            raise DataError(f"{folder} holds only half of the {split} split: {missing}(.gz) is missing. {HOW_TO_GET}")
        return read_idx(img), read_idx(lab).astype(np.int64), str(folder)
    return None


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
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
    images, labels = fashion_mnist_from_tfds(split)
    verify(split, images, labels, "tensorflow-datasets")
    target = local_dirs()[0] if os.environ.get("VAE_LIB_DATA_DIR") else cache_dir()
    try:  # keep a copy so later loads need neither the network nor TensorFlow
        img_stem, lab_stem = FILES[split]
        write_idx(target / (img_stem + ".gz"), images)
        write_idx(target / (lab_stem + ".gz"), labels.astype(np.uint8))
    except OSError:
        pass
    return images, labels


# ------------------------------------------------------------ tensorflow-datasets
def is_online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to tfds' download host opens in time.

    Args:
      host: host to connect to (by default the one tfds downloads from).
      port: TCP port on `host`.
      timeout: seconds to wait for the connection before calling the machine offline.

    Returns:
      True when the connection opened within `timeout` seconds, False otherwise.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _import_tfds() -> ModuleType:
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
    """Load a tfds image-classification data set of 28x28 images as numpy arrays.

    Args:
      name: the tfds data set name, e.g. ``"fashion_mnist"`` or ``"mnist"``.
      split: the tfds split, e.g. ``"train"`` or ``"test"``.
      download: whether tfds may download the data set when it is not prepared yet.

    Returns:
      ``(images, labels)``: uint8 images (N, 28, 28) and int64 labels (N,), in tfds' order.

    Raises:
      ImportError: tensorflow-datasets or TensorFlow is not installed.
      DataError: tfds returned no examples.
    """
    tfds = _import_tfds()
    ds = tfds.load(name, split=split, as_supervised=True, download=download)
    chunks = list(tfds.as_numpy(ds.batch(10000)))
    if not chunks:
        raise DataError(f"tensorflow-datasets returned no examples for {name} {split}.")
    images = np.concatenate([np.asarray(c[0], dtype=np.uint8) for c in chunks])
    labels = np.concatenate([np.asarray(c[1], dtype=np.int64) for c in chunks])
    return images.reshape(-1, 28, 28), labels


def fashion_mnist_from_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` through tensorflow-datasets, downloading only if it must.

    What tfds already prepared on this machine is used without the network; otherwise it
    downloads, after a quick check that the machine is online (tfds alone retries for
    minutes). The arrays are not verified here: :func:`load`,
    which calls this when no local copy exists, verifies them and writes the IDX cache.

    Args:
      split: ``"train"`` or ``"test"``.

    Returns:
      ``(images, labels)``: uint8 images (N, 28, 28) and int64 labels (N,).

    Raises:
      DataError: tensorflow-datasets cannot run here, or the data is not prepared and the
        machine is offline; the message names the remedies.
    """
    try:  # already prepared by tfds on this machine: no network needed
        return load_from_tfds("fashion_mnist", split, download=False)
    except ImportError as e:
        raise DataError(
            f"Fashion-MNIST is not on this machine and tensorflow-datasets cannot run here ({e}). {HOW_TO_GET}"
        ) from e
    except Exception:  # noqa: BLE001 - not prepared yet; fall through to a download
        pass
    if not is_online():
        raise DataError(
            f"Fashion-MNIST was not found locally (looked in: "
            f"{', '.join(map(str, local_dirs()))}) and this machine is offline, so "
            f"tensorflow-datasets cannot download it. {HOW_TO_GET}"
        )
    return load_from_tfds("fashion_mnist", split, download=True)
