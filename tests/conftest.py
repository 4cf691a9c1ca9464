"""Shared fixtures. Tests use the real Fashion-MNIST (see README: `make data`)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from vae_lib import data  # noqa: E402


@pytest.fixture(scope="session")
def fashion_test():
    return data.load_fashion_mnist("test")


@pytest.fixture(scope="session")
def fashion_train():
    return data.load_fashion_mnist("train")


# tests/data/ holds inputs for tests (the JupyterLab smoke notebook), not notebooks for nbval to collect.
collect_ignore_glob = ["data/*.ipynb"]
