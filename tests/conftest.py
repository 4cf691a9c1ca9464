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


# The slides and the book the browser tests open (tests/helpers.py: `built_site`), built once a session.
@pytest.fixture(scope="session")
def built_slides(tmp_path_factory):
    """build/slides when current, else every deck built into a temporary folder."""
    from helpers import built_site, find_browser

    find_browser("slides and book browser tests")  # skip at once, before building, where there is no browser
    return built_site("slides", tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """build/book when current, else the book built into a temporary folder."""
    from helpers import built_site, find_browser

    find_browser("slides and book browser tests")
    return built_site("book", tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def site(built_slides, built_book, tmp_path_factory):
    """A folder holding slides/ and book/ (links to where each was built when not in one folder)."""
    if built_slides.parent == built_book.parent:
        return built_slides.parent
    root = tmp_path_factory.mktemp("site")
    (root / "slides").symlink_to(built_slides, target_is_directory=True)
    (root / "book").symlink_to(built_book, target_is_directory=True)
    return root
