"""python -m vae_lib.cli.fetch_data (``make data``): reports the data ready, or fails with the remedies."""

import numpy as np

from vae_lib.cli import fetch_data
from vae_lib.store import fashion_mnist


def _copy_split(dst, split: str, images=None, labels=None):
    img, lab = fashion_mnist.FILES[split]
    src_images, src_labels = fashion_mnist.load(split)
    fashion_mnist.write_idx(dst / f"{img}.gz", src_images if images is None else images)
    fashion_mnist.write_idx(dst / f"{lab}.gz", (src_labels if labels is None else labels).astype(np.uint8))


def test_make_data_reports_ready_when_the_files_are_there(tmp_path, monkeypatch, capsys):
    _copy_split(tmp_path, "train")
    _copy_split(tmp_path, "test")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    assert fetch_data.main() == 0
    assert f"verified (IDX files in {tmp_path})" in capsys.readouterr().out


def test_make_data_fails_with_the_remedies_when_a_local_file_is_corrupt(tmp_path, monkeypatch, capsys):
    _copy_split(tmp_path, "train")
    _copy_split(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path))
    assert fetch_data.main() == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().err
