"""vae_lib.pretrained: the stored models match their recipes and histories; the command remakes them."""

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from vae_lib import checkpoint, evaluation, pretrained

STORED = Path(__file__).resolve().parents[1] / "notebooks" / "pretrained"


def test_the_default_folder_is_the_notebooks_pretrained_folder():
    assert pretrained.FOLDER == STORED


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_each_stored_file_was_made_with_its_recipe(name):
    recipe, info = pretrained.RECIPES[name], checkpoint.read_info(STORED / f"{name}.msgpack")
    assert (info["hidden"], info["latent"], info["seed"]) == (recipe.hidden, recipe.latent, recipe.seed)
    assert info["history"]["epoch"] == list(range(1, recipe.epochs + 1))


def test_the_stored_20d_model_scores_the_test_loss_its_history_records(fashion_test):
    model, history = pretrained.load("vae_z20", STORED)
    loss = evaluation.evaluate(model, fashion_test[0], jax.random.key(0))["loss"]
    # A fresh single-sample estimate on 10,000 images (its noise is about 0.1 nats) of float16 weights.
    assert abs(loss - history["test_loss"][-1]) < 0.5, (loss, history["test_loss"][-1])


def test_the_command_writes_a_float16_file_that_loads_with_its_history(tmp_path, capsys):
    assert pretrained.main(["vae_z2", "--epochs", "1", "--out", str(tmp_path)]) == 0
    path = tmp_path / "vae_z2.msgpack"
    stored = serialization.msgpack_restore(path.read_bytes())["params"]
    assert {np.asarray(a).dtype for a in stored.values()} == {np.dtype(np.float16)}
    model, history = pretrained.load("vae_z2", tmp_path)
    assert model.latent == 2 and history["epoch"] == [1]
    assert 250 < history["test_loss"][0] < 320  # one epoch of the 2-D model: about 280 nats
    assert "vae_z2: 1 epoch(s)" in capsys.readouterr().out


def test_a_missing_file_says_which_command_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m vae_lib.pretrained vae_z20"):
        pretrained.load("vae_z20", tmp_path)


def test_a_file_of_other_sizes_is_refused_naming_both(tmp_path):
    checkpoint.save(tmp_path / "vae_z2.msgpack", pretrained.build("vae_z20"), info={"hidden": 400, "latent": 20})
    with pytest.raises(ValueError, match="400-20 model, but recipe 'vae_z2' is 400-2"):
        pretrained.load("vae_z2", tmp_path)


def test_saving_a_model_under_another_recipe_is_refused(tmp_path):
    with pytest.raises(ValueError, match="2-D latent space"):
        pretrained.save("vae_z2", pretrained.build("vae_z20"), {"epoch": []}, tmp_path)


def test_a_shorter_run_cannot_replace_the_stored_models():
    with pytest.raises(SystemExit):
        pretrained.main(["vae_z2", "--epochs", "1"])


def test_an_unknown_model_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="vae_z2"):
        pretrained.build("vae_z3")
