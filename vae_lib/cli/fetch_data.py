"""``python -m vae_lib.cli.fetch_data`` (``make data``): get Fashion-MNIST onto this machine.

Does nothing when the local files are already there; otherwise, in order:

1. Debian/Ubuntu's package ``dataset-fashion-mnist``, installed with ``apt-get`` when run as
   root on a system that has it (and ``VAE_LIB_DATA_DIR`` is not set);
2. tensorflow-datasets' ``fashion_mnist``, downloaded when online.

Either way each split is then loaded once through :func:`vae_lib.store.fashion_mnist.load`,
which verifies it and, for the tfds route, writes the IDX copy to vae_lib's cache (or to
``VAE_LIB_DATA_DIR``) so later loads need neither the network nor TensorFlow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from vae_lib.store import fashion_mnist

__all__ = ["install_debian_package", "main"]


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
    """Make Fashion-MNIST available and verified: ``python -m vae_lib.cli.fetch_data`` (``make data``).

    Nothing is fetched when local files are there; else Debian's package (as root, with
    apt, unless ``VAE_LIB_DATA_DIR`` is set); else tensorflow-datasets. Either way each
    split is then loaded once, which verifies it. Prints where the files are, or the
    error and its remedies on stderr.

    Returns:
      The process exit status: 0 when both splits are there and verified, 1 otherwise.
    """
    folder = fashion_mnist.local_folder()
    if folder is None and not os.environ.get("VAE_LIB_DATA_DIR") and shutil.which("apt-get") and os.geteuid() == 0:
        print("Installing Debian's package dataset-fashion-mnist ...", flush=True)
        if install_debian_package():
            folder = fashion_mnist.local_folder()
    if folder is None:
        print("Fetching Fashion-MNIST through tensorflow-datasets ...", flush=True)
    try:
        for split in fashion_mnist.FILES:
            fashion_mnist.load(split)
    except fashion_mnist.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = folder if folder is not None else fashion_mnist.local_folder()
    print(f"Fashion-MNIST is ready and verified (IDX files in {where}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
