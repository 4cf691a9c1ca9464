"""python -m vae_lib.cli.train_models: trains any stored model into a folder; a short run cannot replace them."""

import numpy as np
import pytest
from flax import serialization

from vae_lib.cli import train_models
from vae_lib.store import zoo


def test_the_command_writes_a_float16_file_that_loads_with_its_history(tmp_path, capsys):
    assert train_models.main(["vae_z2", "--max-epochs", "1", "--out", str(tmp_path)]) == 0
    path = tmp_path / "vae_z2.msgpack"
    stored = serialization.msgpack_restore(path.read_bytes())["params"]
    assert {np.asarray(a).dtype for a in stored.values()} == {np.dtype(np.float16)}
    model, info = zoo.load("vae_z2", tmp_path)
    assert model.latent == 2 and info["history"]["epoch"] == [1]
    assert 250 < info["history"]["test_loss"][0] < 320  # one epoch of the 2-D model: about 280 nats
    out = capsys.readouterr().out
    assert "vae_z2 epoch 1/1" in out and f"vae_z2: wrote {path}" in out


def test_an_unknown_model_name_is_refused_with_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_models.main(["nope", "--out", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no recipe called nope" in err and "vae_z2" in err


@pytest.mark.parametrize("option", [["--max-epochs", "1"], ["--eval-k", "10"]])
def test_a_shorter_run_without_out_is_refused_so_it_cannot_replace_the_stored_models(capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        train_models.main(["sweep_z2", *option])
    assert exit_info.value.code == 2
    assert "need --out" in capsys.readouterr().err
