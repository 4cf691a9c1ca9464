"""vae_lib.store.zoo: one recipe table for every stored model, the models found through the package,
and the training that makes them (early stopping, warm-up, resuming)."""

import tomllib
from dataclasses import asdict, replace
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import REPO

import vae_lib
from vae_lib import evaluation, training
from vae_lib.store import checkpoint, zoo

PACKAGE = Path(vae_lib.__file__).resolve().parent
#: The models scored with L_5000 on the whole test set: notebook 06b's sections 2 and 3.
CONVERGED = [
    "vae_converged",
    "vae_converged_cosine",
    "vae_converged_gated",
    "vae_converged_long",
    "vae_converged_long_seed41",
]
STORED = sorted(zoo.RECIPES)  # every recipe has its model in the package


def _quiet(line):
    pass


# ---------------------------------------------------------------- the stored models, through the package


def test_the_stored_models_folder_lies_inside_the_vae_lib_package():
    assert zoo.FOLDER.resolve().is_relative_to(PACKAGE)


def test_the_package_data_ships_every_stored_model_with_a_non_editable_install():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "vae_lib.store" in config["packages"]
    store = PACKAGE / "store"
    shipped = {p for pattern in config["package-data"]["vae_lib.store"] for p in store.glob(pattern)}
    assert {zoo.FOLDER / f"{name}.msgpack" for name in STORED} <= shipped


@pytest.mark.parametrize("name", STORED)
def test_each_recipes_model_loads_from_the_package_whatever_the_current_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is looked up relative to where Python runs
    model, info = zoo.load(name)
    r = zoo.RECIPES[name]
    assert (tuple(checkpoint.architecture(model)["hidden"]), model.latent) == (r.hidden, r.latent)
    assert info["seed"] == r.seed


@pytest.mark.parametrize("name", STORED)
def test_each_stored_model_was_trained_with_its_recipe(name):
    r, info = zoo.RECIPES[name], checkpoint.read_info(zoo.FOLDER / f"{name}.msgpack")
    epochs = info["history"]["epoch"]
    if r.patience is None:
        assert epochs == list(range(1, r.max_epochs + 1))
    else:
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) <= r.max_epochs
    stored = (info.get("beta", 1.0), info.get("free_bits", 0.0), info.get("warmup_epochs", 0))
    assert stored == (r.beta, r.free_bits, r.warmup_epochs)


def test_the_stored_20d_model_scores_the_test_loss_its_history_records(fashion_test):
    model, info = zoo.load("vae_z20")
    history = info["history"]
    loss = evaluation.evaluate(model, fashion_test[0], jax.random.key(0))["loss"]
    # A fresh single-sample estimate on 10,000 images (its noise is about 0.1 nats) of float16 weights.
    assert abs(loss - history["test_loss"][-1]) < 0.5, (loss, history["test_loss"][-1])


@pytest.mark.parametrize("name", CONVERGED)
def test_each_converged_model_was_evaluated_on_the_whole_test_set_with_5000_samples(name):
    e = checkpoint.read_info(zoo.FOLDER / f"{name}.msgpack")["evaluation"]
    assert (e["k"], e["test_images"], len(e["log_px"]), len(e["elbo"])) == (5000, 10000, 10000, 10000)
    assert (e["binarization_seed"], e["sample_seed"]) == (zoo.EVAL_BINARIZATION_SEED, zoo.EVAL_BINARIZATION_SEED + 1)
    assert e["nll"] == pytest.approx(-np.mean(e["log_px"]), abs=1e-3)
    assert np.mean(np.array(e["log_px"]) >= np.array(e["elbo"])) > 0.99  # L_5000 above the ELBO, image by image


def test_the_converged_model_stopped_early_on_its_validation_loss():
    h = checkpoint.read_info(zoo.FOLDER / "vae_converged.msgpack")["history"]
    assert h["stopped"] == "early" and h["epoch"][-1] - h["best_epoch"] > zoo.RECIPES["vae_converged"].patience - 1
    assert min(h["valid_loss"]) == h["valid_loss"][h["epoch"].index(h["best_epoch"])]


# ---------------------------------------------------------------- clear errors


def test_an_unknown_model_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"No stored model called 'vae_z3'.*'vae_z2'"):
        zoo.build("vae_z3")


def test_a_missing_file_says_which_command_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"python -m vae_lib.cli.train_models vae_z20 --out {tmp_path}"):
        zoo.load("vae_z20", tmp_path)


def test_a_file_of_other_sizes_is_refused_naming_both(tmp_path):
    checkpoint.save(tmp_path / "vae_z2.msgpack", zoo.build("vae_z20"))
    with pytest.raises(ValueError, match=r"latent size 20, but recipe 'vae_z2' has \(400,\) and 2"):
        zoo.load("vae_z2", tmp_path)


@pytest.mark.parametrize("shorter", [{"max_epochs": 1}, {"eval_k": 10}])
def test_a_shorter_run_must_not_write_into_the_stored_models_folder(shorter):
    with pytest.raises(ValueError, match="needs another folder"):
        zoo.make("vae_z2", **shorter)


def test_build_seeds_the_initialisation_with_the_recipes_init_seed():
    a, b = zoo.build("vae_z2"), zoo.build("vae_z20")  # both init_seed 0: the same first-layer weights
    np.testing.assert_array_equal(a.encoder.body.layers[0].kernel[...], b.encoder.body.layers[0].kernel[...])


def test_the_validation_split_is_disjoint_and_seeded():
    images = np.arange(12_000)
    train, valid = zoo.split_train_validation(images)
    assert len(valid) == 10_000 and len(train) == 2_000
    assert not set(train) & set(valid)
    assert np.array_equal(valid, zoo.split_train_validation(images)[1])


# ---------------------------------------------------------------- training a recipe


@pytest.fixture
def tiny_recipe(monkeypatch):
    """Put a small recipe called "tiny" into the table (for this test only); returns its name."""

    def put(**kw):
        base = {"hidden": (32,), "latent": 2, "seed": 0, "max_epochs": 3, "batch_size": 64}
        monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe(**{**base, **kw}))
        return "tiny"

    return put


def test_early_stopping_ends_after_patience_epochs_without_a_better_validation_loss(tiny_recipe, fashion_train):
    name = tiny_recipe(learning_rate=0.0, patience=2, max_epochs=10)  # no step changes anything
    images = fashion_train[0][:640]
    _, history = zoo.train(name, images, images[:200], resume_folder=None, log=_quiet)
    assert history["epoch"] == [1, 2, 3] and history["best_epoch"] == 1 and history["stopped"] == "early"


def test_a_run_that_reaches_max_epochs_says_so(tiny_recipe, fashion_train):
    name = tiny_recipe(max_epochs=2)
    images = fashion_train[0][:640]
    _, history = zoo.train(name, images, images[:200], resume_folder=None, log=_quiet)
    assert history["epoch"] == [1, 2] and history["stopped"] == "max_epochs"


def test_training_returns_the_parameters_of_the_best_validation_epoch_not_the_last(tiny_recipe, fashion_train):
    # A high learning rate: on these images the validation loss is best at epoch 2 and worse at epoch 3.
    name = tiny_recipe(learning_rate=0.2, patience=5, max_epochs=3)
    train_images, valid = fashion_train[0][:2000], fashion_train[0][3000:3500]
    model, history = zoo.train(name, train_images, valid, resume_folder=None, log=_quiet)
    best = history["best_epoch"]
    assert best < history["epoch"][-1], f"the last epoch was the best ({history['valid_loss']}): no test"
    assert history["valid_loss"][best - 1] == min(history["valid_loss"])
    k_valid = jax.random.split(jax.random.key(zoo.RECIPES[name].seed))[1]  # fit's evaluation key
    assert evaluation.evaluate(model, valid, k_valid)["loss"] == pytest.approx(
        history["valid_loss"][best - 1], rel=1e-6
    )


def test_warm_up_raises_beta_linearly_to_its_value(tiny_recipe, fashion_train):
    name = tiny_recipe(warmup_epochs=2, max_epochs=3)
    images = fashion_train[0][:640]
    _, history = zoo.train(name, images, images[:200], resume_folder=None, log=_quiet)
    assert history["beta"] == [0.5, 1.0, 1.0]
    # every epoch records the objective (beta x KL) beside the true loss; at beta = 1 they agree
    assert len(history["train_objective"]) == 3
    assert history["train_objective"][-1] == pytest.approx(history["train_loss"][-1], rel=1e-5)


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tiny_recipe, fashion_train, tmp_path):
    name = tiny_recipe(max_epochs=3, patience=3)
    images, valid = fashion_train[0][:2560], fashion_train[0][3000:3500]
    straight, straight_history = zoo.train(name, images, valid, resume_folder=None, log=_quiet)
    zoo.train(name, images, valid, max_epochs=2, resume_folder=tmp_path, log=_quiet)  # cut after epoch 2
    assert (tmp_path / f"{name}.resume.msgpack").is_file()
    lines = []
    resumed, history = zoo.train(name, images, valid, resume_folder=tmp_path, log=lines.append)
    assert "resuming after epoch 2" in lines[0] and len(lines) == 2  # the message, then epoch 3 only
    assert history == straight_history
    a, b = nnx.state(straight, nnx.Param), nnx.state(resumed, nnx.Param)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_a_resume_file_of_another_recipe_is_refused(tiny_recipe, fashion_train, tmp_path):
    name = tiny_recipe(max_epochs=3)
    state = training.create_train_state(zoo.build(name))
    other = {"hidden": [64], "latent": 2}
    checkpoint.save_tree(tmp_path / f"{name}.resume.msgpack", (state, state.params), info={"recipe": other})
    images = fashion_train[0][:640]
    with pytest.raises(ValueError, match="written for another recipe"):
        zoo.train(name, images, images[:200], resume_folder=tmp_path, log=_quiet)


def test_a_resume_file_written_before_a_recipe_field_existed_still_resumes(tiny_recipe, fashion_train, tmp_path):
    name = tiny_recipe(max_epochs=3)
    images = fashion_train[0][:640]
    zoo.train(name, images, images[:200], max_epochs=2, resume_folder=tmp_path, log=_quiet)
    path = tmp_path / f"{name}.resume.msgpack"
    state = training.create_train_state(zoo.build(name))
    tree, info = checkpoint.load_tree(path, (state, state.params))
    for field in ("final_learning_rate", "gated", "ema_decay"):  # the fields issue #25 added, at their defaults
        del info["recipe"][field]
    checkpoint.save_tree(path, tree, info=info)
    lines = []
    _, history = zoo.train(name, images, images[:200], resume_folder=tmp_path, log=lines.append)
    assert "resuming after epoch 2" in lines[0] and history["epoch"] == [1, 2, 3]


# ---------------------------------------------------------------- the recipes of issue #25

#: Every recipe as it was before issue #25 added fields: the defaults, then each recipe's own values.
OLD_DEFAULTS = {
    "init_seed": None,
    "holdout": "validation",
    "beta": 1.0,
    "free_bits": 0.0,
    "warmup_epochs": 0,
    "patience": None,
    "batch_size": 128,
    "learning_rate": 0.001,
    "eval_k": 0,
}
SWEEP = {"hidden": (256,), "latent": 32, "seed": 6, "max_epochs": 10}
OLD_RECIPES = {
    "vae_z20": {"hidden": (400,), "latent": 20, "seed": 2024, "max_epochs": 10, "init_seed": 0, "holdout": "test"},
    "vae_z2": {"hidden": (400,), "latent": 2, "seed": 2025, "max_epochs": 5, "init_seed": 0, "holdout": "test"},
    "vae_converged": {
        "hidden": (300, 300),
        "latent": 40,
        "seed": 40,
        "max_epochs": 400,
        "patience": 25,
        "eval_k": 5000,
    },
    **{f"sweep_beta{b}": {**SWEEP, "beta": float(b)} for b in ("0.1", "0.3", "3", "10")},
    **{f"sweep_z{z}": {**SWEEP, "latent": z} for z in (2, 4, 8, 16, 32, 64)},
    "sweep_z64_warmup": {**SWEEP, "latent": 64, "warmup_epochs": 5},
    "sweep_z64_freebits": {**SWEEP, "latent": 64, "free_bits": 0.25},
}


@pytest.mark.parametrize("name", sorted(OLD_RECIPES))
def test_every_earlier_recipe_is_unchanged_and_leaves_the_new_fields_at_their_defaults(name):
    new_defaults = {"final_learning_rate": None, "gated": False, "ema_decay": None}
    assert asdict(zoo.RECIPES[name]) == {**OLD_DEFAULTS, **OLD_RECIPES[name], **new_defaults}


def test_the_issue_25_recipes_are_the_trial_scripts_settings():
    cosine = zoo.RECIPES["vae_converged_cosine"]
    assert (cosine.hidden, cosine.latent, cosine.seed, cosine.init_seed) == ((300, 300), 40, 40, None)
    assert (cosine.max_epochs, cosine.warmup_epochs, cosine.patience, cosine.eval_k) == (300, 30, None, 5000)
    assert (cosine.learning_rate, cosine.final_learning_rate, cosine.gated, cosine.ema_decay) == (
        1e-3,
        1e-5,
        False,
        None,
    )
    assert zoo.RECIPES["vae_converged_gated"] == replace(cosine, gated=True, ema_decay=0.999)
    assert zoo.build("vae_converged_gated").gated and not zoo.build("vae_converged_cosine").gated


def test_the_long_recipe_is_the_gated_one_for_twice_the_epochs_without_the_average_and_its_seed_twin_differs_in_seed():
    long = zoo.RECIPES["vae_converged_long"]
    assert long == replace(zoo.RECIPES["vae_converged_gated"], max_epochs=600, ema_decay=None)
    assert zoo.RECIPES["vae_converged_long_seed41"] == replace(long, seed=41)


@pytest.mark.parametrize("name", CONVERGED[1:])
def test_a_recipe_with_warm_up_kept_its_best_validation_epoch_after_the_warm_up(name):
    r, h = zoo.RECIPES[name], checkpoint.read_info(zoo.FOLDER / f"{name}.msgpack")["history"]
    best = h["best_epoch"]
    assert best >= r.warmup_epochs and h["valid_loss"][best - 1] == min(h["valid_loss"][r.warmup_epochs - 1 :])


def test_the_cosine_recipe_decays_the_learning_rate_from_1e_3_to_1e_5_over_its_epochs():
    steps_per_epoch = 50_000 // 128  # the training split in batches of 128
    lr = zoo.learning_rate(zoo.RECIPES["vae_converged_cosine"], steps_per_epoch)
    last = 300 * steps_per_epoch
    assert float(lr(0)) == pytest.approx(1e-3, rel=1e-6)
    assert float(lr(last // 2)) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-5)  # half way down the cosine
    assert float(lr(last - 1)) == pytest.approx(1e-5, rel=1e-3) and float(lr(last)) == pytest.approx(1e-5, rel=1e-6)
    assert zoo.learning_rate(zoo.RECIPES["vae_converged"], steps_per_epoch) == 1e-3  # the others: a constant


def test_with_warm_up_the_best_epoch_is_chosen_among_the_epochs_after_it(tiny_recipe, fashion_train):
    # learning rate 0: every epoch scores the same, so the first epoch allowed to be the best is
    name = tiny_recipe(learning_rate=0.0, warmup_epochs=3, max_epochs=4)
    images = fashion_train[0][:640]
    _, history = zoo.train(name, images, images[:200], resume_folder=None, log=_quiet)
    assert len(set(history["valid_loss"])) == 1
    assert history["best_epoch"] == 3 and history["stopped"] == "max_epochs"


def test_without_warm_up_or_patience_the_last_epoch_is_kept(tiny_recipe, fashion_train):
    name = tiny_recipe(learning_rate=0.0, max_epochs=3)
    images = fashion_train[0][:640]
    _, history = zoo.train(name, images, images[:200], resume_folder=None, log=_quiet)
    assert history["best_epoch"] == 3


def test_the_patience_counter_starts_when_warm_up_ends(tiny_recipe, fashion_train):
    name = tiny_recipe(learning_rate=0.0, warmup_epochs=3, patience=1, max_epochs=10)
    images = fashion_train[0][:640]
    _, history = zoo.train(name, images, images[:200], resume_folder=None, log=_quiet)
    assert history["epoch"] == [1, 2, 3, 4] and history["best_epoch"] == 3 and history["stopped"] == "early"


def test_with_an_average_of_the_weights_the_average_is_scored_and_kept(tiny_recipe, fashion_train):
    name = tiny_recipe(ema_decay=0.9, patience=3, max_epochs=3)
    images, valid = fashion_train[0][:1280], fashion_train[0][3000:3500]
    model, history = zoo.train(name, images, valid, resume_folder=None, log=_quiet)
    raw, averaged, best = history["valid_loss_raw"], history["valid_loss"], history["best_epoch"]
    assert len(raw) == len(averaged) == 3 and all(a != r for a, r in zip(averaged, raw, strict=True))
    assert averaged[best - 1] == min(averaged)
    key = jax.random.key(zoo.EMA_VALIDATION_SEED)
    assert evaluation.evaluate(model, valid, key)["loss"] == pytest.approx(averaged[best - 1], rel=1e-6)


def test_a_gated_averaged_cosine_run_resumes_bit_identical(tiny_recipe, fashion_train, tmp_path):
    name = tiny_recipe(gated=True, ema_decay=0.9, final_learning_rate=1e-4, warmup_epochs=1, max_epochs=3)
    images, valid = fashion_train[0][:1280], fashion_train[0][3000:3500]
    straight, straight_history = zoo.train(name, images, valid, resume_folder=None, log=_quiet)
    zoo.train(name, images, valid, max_epochs=2, resume_folder=tmp_path, log=_quiet)  # cut after epoch 2
    resumed, history = zoo.train(name, images, valid, resume_folder=tmp_path, log=_quiet)
    assert history == straight_history
    for u, v in zip(jax.tree.leaves(nnx.state(straight)), jax.tree.leaves(nnx.state(resumed)), strict=True):
        np.testing.assert_array_equal(u, v)


def test_a_gated_file_is_refused_for_an_ungated_recipe(tmp_path):
    checkpoint.save(tmp_path / "vae_converged.msgpack", zoo.build("vae_converged_gated"))
    with pytest.raises(ValueError, match=r"holds a gated model .* recipe 'vae_converged' has \(300, 300\)"):
        zoo.load("vae_converged", tmp_path)
