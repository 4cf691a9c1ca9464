"""vae_lib.store.fashion_mnist: the real Fashion-MNIST from every source, and clear errors when it is not there."""

import gzip
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO

from vae_lib.store import fashion_mnist


def test_loaded_arrays_match_the_recorded_digest(fashion_test):
    assert fashion_mnist.digest(*fashion_test) == fashion_mnist.DIGESTS["test"]


def _copy_split(dst, split: str, images=None, labels=None):
    img, lab = fashion_mnist.FILES[split]
    src_images, src_labels = fashion_mnist.load(split)
    fashion_mnist.write_idx(dst / f"{img}.gz", src_images if images is None else images)
    fashion_mnist.write_idx(dst / f"{lab}.gz", (src_labels if labels is None else labels).astype(np.uint8))


def test_data_dir_variable_is_the_only_local_place_used(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    assert fashion_mnist.local_dirs() == [tmp_path]
    images, labels = fashion_mnist.load("test")
    assert fashion_mnist.digest(images, labels) == fashion_mnist.DIGESTS["test"]


def test_idx_round_trip_preserves_bytes(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    fashion_mnist.write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "a.gz"), arr)


def test_write_idx_marks_its_files_as_compressed_at_the_fastest_level(tmp_path):
    # gzip's header byte 8 (XFL) is 4 for the fastest level (1), 2 for the best (9): level 1 is 18x faster
    fashion_mnist.write_idx(tmp_path / "a.gz", np.zeros((3, 4), np.uint8))
    assert (tmp_path / "a.gz").read_bytes()[8] == 4


def test_truncated_file_raises_clear_error(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(fashion_mnist.DataError, match="truncated"):
        fashion_mnist.load("test")


def test_cut_gzip_stream_raises_clear_error(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(fashion_mnist.DataError, match="truncated or corrupt"):
        fashion_mnist.load("test")


def test_altered_pixels_fail_the_digest_check(tmp_path, monkeypatch, fashion_test):
    images = fashion_test[0].copy()
    images[123, 14, 14] ^= 1
    _copy_split(tmp_path, "test", images=images)
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(fashion_mnist.DataError, match="not the official data"):
        fashion_mnist.load("test")


def test_half_a_split_names_the_missing_file(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(fashion_mnist.DataError, match="t10k-labels-idx1-ubyte"):
        fashion_mnist.load("test")


def test_offline_without_local_files_fails_fast_naming_both_remedies(tmp_path):
    """No local files and no network: a DataError, not tfds' minutes of retries.

    The child process cuts every outgoing connection (as a machine without network would)
    and points vae_lib and tfds at empty folders. The subprocess timeout only guards
    against a hang; the behaviour asserted is the error and its message.
    """
    empty = tmp_path / "empty"
    empty.mkdir()
    script = textwrap.dedent("""
        import socket
        def refuse(self, *a, **k):
            raise OSError("network is unreachable (simulated)")
        socket.socket.connect = refuse
        from vae_lib.store import fashion_mnist
        try:
            fashion_mnist.load("test")
        except fashion_mnist.DataError as e:
            print("DATAERROR:", e)
    """)
    env = dict(
        os.environ,
        VAE_LIB_DATA_DIR=str(empty),
        TFDS_DATA_DIR=str(tmp_path / "tfds"),
        HOME=str(tmp_path),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "DATAERROR:" in out.stdout, out.stderr[-2000:]
    assert "offline" in out.stdout
    assert "dataset-fashion-mnist" in out.stdout and "internet" in out.stdout


def test_online_probe_reports_a_refused_connection_as_offline():
    assert fashion_mnist.is_online("127.0.0.1", 9, timeout=1.0) is False


# ------------------------------------------------------------ tensorflow-datasets


def _real_test_split_as_tfds(fashion_test):
    """A tfds `as_dataset` replacement that serves the real test split (for mock_data)."""
    import tensorflow as tf

    images, labels = fashion_test

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"image": images[..., None], "label": labels.astype(np.int64)})

    return as_dataset


def test_tfds_path_yields_the_official_bytes(tmp_path, monkeypatch, fashion_test):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with tfds.testing.mock_data(as_dataset_fn=_real_test_split_as_tfds(fashion_test)):
        images, labels = fashion_mnist.load("test")
    assert fashion_mnist.digest(images, labels) == fashion_mnist.DIGESTS["test"]


def test_tfds_load_leaves_a_copy_that_later_loads_read_without_tfds(tmp_path, monkeypatch, fashion_test):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with tfds.testing.mock_data(as_dataset_fn=_real_test_split_as_tfds(fashion_test)):
        fashion_mnist.load("test")

    def no_tfds(split):
        raise AssertionError("the second load went to tensorflow-datasets")

    monkeypatch.setattr(fashion_mnist, "fashion_mnist_from_tfds", no_tfds)
    images, labels = fashion_mnist.load("test")
    assert fashion_mnist.digest(images, labels) == fashion_mnist.DIGESTS["test"]


def test_tfds_path_rejects_data_that_is_not_fashion_mnist(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with tfds.testing.mock_data(num_examples=10000):  # random images of the right shape
        with pytest.raises(fashion_mnist.DataError, match="not the official data"):
            fashion_mnist.load("test")
    assert not (tmp_path / "t10k-images-idx3-ubyte.gz").exists()
