"""Fetching Fashion-MNIST (and MNIST): getting the data onto this machine.

:mod:`vae_lib.data` reads and verifies local IDX files; this module is what gets them
there. ``python -m vae_lib.fetch`` (what ``make data`` runs) does nothing when the
local files are already there; otherwise, in order:

1. Debian/Ubuntu's package ``dataset-fashion-mnist``, installed with ``apt-get`` when
   run as root on a system that has it (and ``VAE_LIB_DATA_DIR`` is not set);
2. tensorflow-datasets' ``fashion_mnist``, downloaded when online.

Either way each split is then loaded once through :func:`vae_lib.data.load_fashion_mnist`,
which verifies it and, for the tfds route, writes the IDX copy to vae_lib's cache (or to
``VAE_LIB_DATA_DIR``) so later loads need neither the network nor TensorFlow.

TensorFlow and tensorflow-datasets are imported only when a function here needs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from types import ModuleType

import numpy as np

from vae_lib import data

__all__ = [
    "fashion_mnist_from_tfds",
    "install_debian_package",
    "is_online",
    "load_from_tfds",
    "load_mnist",
    "main",
]


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
      data.DataError: tfds returned no examples.
    """
    tfds = _import_tfds()
    ds = tfds.load(name, split=split, as_supervised=True, download=download)
    chunks = list(tfds.as_numpy(ds.batch(10000)))
    if not chunks:
        raise data.DataError(f"tensorflow-datasets returned no examples for {name} {split}.")
    images = np.concatenate([np.asarray(c[0], dtype=np.uint8) for c in chunks])
    labels = np.concatenate([np.asarray(c[1], dtype=np.int64) for c in chunks])
    return images.reshape(-1, 28, 28), labels


def fashion_mnist_from_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` through tensorflow-datasets, downloading only if it must.

    What tfds already prepared on this machine is used without the network; otherwise it
    downloads, after a quick check that the machine is online (tfds alone retries for
    minutes). The arrays are not verified here: :func:`vae_lib.data.load_fashion_mnist`,
    which calls this when no local copy exists, verifies them and writes the IDX cache.

    Args:
      split: ``"train"`` or ``"test"``.

    Returns:
      ``(images, labels)``: uint8 images (N, 28, 28) and int64 labels (N,).

    Raises:
      data.DataError: tensorflow-datasets cannot run here, or the data is not prepared and the
        machine is offline; the message names the remedies.
    """
    try:  # already prepared by tfds on this machine: no network needed
        return load_from_tfds("fashion_mnist", split, download=False)
    except ImportError as e:
        raise data.DataError(
            f"Fashion-MNIST is not on this machine and tensorflow-datasets cannot run here ({e}). {data._HOW_TO_GET}"
        ) from e
    except Exception:  # noqa: BLE001 - not prepared yet; fall through to a download
        pass
    if not is_online():
        raise data.DataError(
            f"Fashion-MNIST was not found locally (looked in: "
            f"{', '.join(map(str, data.local_dirs()))}) and this machine is offline, so "
            f"tensorflow-datasets cannot download it. {data._HOW_TO_GET}"
        )
    return load_from_tfds("fashion_mnist", split, download=True)


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits through tensorflow-datasets (online only: no offline copy is packaged).

    Args:
      split: ``"train"`` (60000 examples) or ``"test"`` (10000).

    Returns:
      ``(images, labels)``: uint8 images (N, 28, 28) with values 0..255 and int64 labels
      (N,), the same convention as :func:`vae_lib.data.load_fashion_mnist`.

    Raises:
      ValueError: `split` is neither ``"train"`` nor ``"test"``.
      data.DataError: tensorflow-datasets cannot run here, or MNIST is not prepared and the
        machine is offline.
    """
    if split not in data.FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        return load_from_tfds("mnist", split, download=False)
    except ImportError as e:
        raise data.DataError(f"load_mnist needs tensorflow-datasets and TensorFlow ({e}).") from e
    except Exception:  # noqa: BLE001 - not prepared yet
        pass
    if not is_online():
        raise data.DataError(
            "MNIST is only available through tensorflow-datasets, which needs a "
            "network connection the first time; this machine is offline. "
            "Use load_fashion_mnist, which works offline."
        )
    return load_from_tfds("mnist", split, download=True)


def install_debian_package() -> bool:
    """Install Debian/Ubuntu's ``dataset-fashion-mnist`` with apt-get (needs root).

    Refreshes the package lists and tries again when the first install fails.

    Returns:
      True when the package was installed (or already was), False otherwise.
    """
    install = ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"]
    return subprocess.run(install).returncode == 0 or (
        subprocess.run(["apt-get", "update", "-qq"]).returncode == 0 and subprocess.run(install).returncode == 0
    )


def main() -> int:
    """Make Fashion-MNIST available and verified: ``python -m vae_lib.fetch`` (``make data``).

    Nothing is fetched when local files are there; else Debian's package (as root, with
    apt, unless ``VAE_LIB_DATA_DIR`` is set); else tensorflow-datasets. Either way each
    split is then loaded once, which verifies it. Prints where the files are, or the
    error and its remedies on stderr.

    Returns:
      The process exit status: 0 when both splits are there and verified, 1 otherwise.
    """
    folder = data.local_folder()
    if folder is None and not os.environ.get("VAE_LIB_DATA_DIR") and shutil.which("apt-get") and os.geteuid() == 0:
        print("Installing Debian's package dataset-fashion-mnist ...", flush=True)
        if install_debian_package():
            folder = data.local_folder()
    if folder is None:
        print("Fetching Fashion-MNIST through tensorflow-datasets ...", flush=True)
    try:
        for split in data.FILES:
            data.load_fashion_mnist(split)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = folder if folder is not None else data.local_folder()
    print(f"Fashion-MNIST is ready and verified (IDX files in {where}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
