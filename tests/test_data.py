"""vae_lib.data and vae_lib.fetch: the real Fashion-MNIST, from every source, and clear errors when it is not there."""

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from vae_lib import data, fetch

REPO = Path(__file__).resolve().parents[1]


def test_train_split_has_official_shape_dtype_and_first_labels(fashion_train):
    images, labels = fashion_train
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and np.issubdtype(labels.dtype, np.integer)
    assert labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_test_split_has_1000_images_per_class(fashion_test):
    images, labels = fashion_test
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10


def test_loaded_arrays_match_the_recorded_digest(fashion_test):
    assert data.digest(*fashion_test) == data.DIGESTS["test"]


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_fashion_mnist("validation")


def _copy_split(dst: Path, split: str, images=None, labels=None):
    img, lab = data.FILES[split]
    src_images, src_labels = data.load_fashion_mnist(split)
    data.write_idx(dst / f"{img}.gz", src_images if images is None else images)
    data.write_idx(dst / f"{lab}.gz", (src_labels if labels is None else labels).astype(np.uint8))


def test_data_dir_variable_is_the_only_local_place_used(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    assert data.local_dirs() == [tmp_path]
    images, labels = data.load_fashion_mnist("test")
    assert data.digest(images, labels) == data.DIGESTS["test"]


def test_idx_round_trip_preserves_bytes(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data.write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), arr)


def test_truncated_file_raises_clear_error(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="truncated"):
        data.load_fashion_mnist("test")


def test_cut_gzip_stream_raises_clear_error(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        data.load_fashion_mnist("test")


def test_altered_pixels_fail_the_digest_check(tmp_path, monkeypatch, fashion_test):
    images = fashion_test[0].copy()
    images[123, 14, 14] ^= 1
    _copy_split(tmp_path, "test", images=images)
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="not the official data"):
        data.load_fashion_mnist("test")


def test_half_a_split_names_the_missing_file(tmp_path, monkeypatch):
    _copy_split(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte"):
        data.load_fashion_mnist("test")


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
        from vae_lib import data
        try:
            data.load_fashion_mnist("test")
        except data.DataError as e:
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
    assert fetch.is_online("127.0.0.1", 9, timeout=1.0) is False


def test_importing_data_imports_neither_fetch_nor_tensorflow():
    script = (
        "import sys, vae_lib.data;"
        "print(sorted(m for m in ('vae_lib.fetch', 'tensorflow', 'tensorflow_datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


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
        images, labels = data.load_fashion_mnist("test")
    assert data.digest(images, labels) == data.DIGESTS["test"]


def test_tfds_load_leaves_a_copy_that_later_loads_read_without_tfds(tmp_path, monkeypatch, fashion_test):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with tfds.testing.mock_data(as_dataset_fn=_real_test_split_as_tfds(fashion_test)):
        data.load_fashion_mnist("test")

    def no_tfds(split):
        raise AssertionError("the second load went to tensorflow-datasets")

    monkeypatch.setattr(fetch, "fashion_mnist_from_tfds", no_tfds)
    images, labels = data.load_fashion_mnist("test")
    assert data.digest(images, labels) == data.DIGESTS["test"]


def test_tfds_path_rejects_data_that_is_not_fashion_mnist(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    with tfds.testing.mock_data(num_examples=10000):  # random images of the right shape
        with pytest.raises(data.DataError, match="not the official data"):
            data.load_fashion_mnist("test")
    assert not (tmp_path / "t10k-images-idx3-ubyte.gz").exists()


def test_to_float_scales_to_unit_interval_and_flattens(fashion_test):
    x = data.to_float(fashion_test[0][:5])
    assert x.shape == (5, 784) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.99


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


def test_batch_iterator_keeps_images_and_labels_together(fashion_test):
    images, labels = fashion_test[0][:1000], fashion_test[1][:1000]
    seen = 0
    for x, y in data.iterate_batches(jax.random.key(0), images, 100, labels=labels):
        assert x.shape == (100, 28, 28) and y.shape == (100,)
        # each image in the batch is the one its label came with in the original order
        idx = [int(np.flatnonzero((images == img).all(axis=(1, 2)))[0]) for img in x[:5]]
        assert labels[idx].tolist() == y[:5].tolist()
        seen += len(x)
    assert seen == 1000


def test_make_data_reports_ready_when_the_files_are_there(tmp_path, monkeypatch, capsys):
    _copy_split(tmp_path, "train")
    _copy_split(tmp_path, "test")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    assert fetch.main() == 0
    assert f"verified (IDX files in {tmp_path})" in capsys.readouterr().out


def test_make_data_fails_with_the_remedies_when_a_local_file_is_corrupt(tmp_path, monkeypatch, capsys):
    _copy_split(tmp_path, "train")
    _copy_split(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    assert fetch.main() == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().err
