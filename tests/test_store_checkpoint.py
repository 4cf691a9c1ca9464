"""vae_lib.store.checkpoint: a model's parameters and info in one file, a whole training state for resuming."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

from vae_lib import models, training
from vae_lib.models import VAE
from vae_lib.store import checkpoint, zoo


def _params(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_same_params(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_checkpoint_round_trip_restores_every_parameter_and_the_info(tmp_path):
    model = VAE(hidden=32, latent=3, rngs=nnx.Rngs(0))
    path = checkpoint.save(
        tmp_path / "sub" / "vae.msgpack", model, info={"latent": 3, "history": {"loss": [2.5, 1.25]}}
    )
    fresh = VAE(hidden=32, latent=3, rngs=nnx.Rngs(1))
    info = checkpoint.load(path, fresh)
    # save() adds the VAE's sizes, so that checkpoint.load_model can rebuild it
    expected = {"latent": 3, "history": {"loss": [2.5, 1.25]}, "architecture": checkpoint.architecture(model)}
    assert info == expected == checkpoint.read_info(path)
    assert info["architecture"] == {"kind": "VAE", "in_features": 784, "hidden": [32], "latent": 3}
    _assert_same_params(nnx.state(fresh, nnx.Param), nnx.state(model, nnx.Param), rtol=0, atol=0)
    x = jnp.linspace(0, 1, 784)[None]
    assert jnp.array_equal(fresh.reconstruct(x), model.reconstruct(x))


def test_float16_checkpoint_is_half_the_size_and_close(tmp_path):
    model = VAE(hidden=32, latent=3, rngs=nnx.Rngs(0))
    full = checkpoint.save(tmp_path / "a.msgpack", model)
    half = checkpoint.save(tmp_path / "b.msgpack", model, dtype=np.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    fresh = VAE(hidden=32, latent=3, rngs=nnx.Rngs(1))
    checkpoint.load(half, fresh)
    assert all(x.dtype == np.float32 for x in _params(nnx.state(fresh, nnx.Param)))
    _assert_same_params(nnx.state(fresh, nnx.Param), nnx.state(model, nnx.Param), rtol=1e-3, atol=1e-4)


def test_loading_into_a_model_of_another_size_names_the_parameter(tmp_path):
    path = checkpoint.save(tmp_path / "vae.msgpack", VAE(hidden=32, latent=3, rngs=nnx.Rngs(0)))
    other = VAE(hidden=32, latent=2, rngs=nnx.Rngs(0))
    before = _params(nnx.state(other))
    with pytest.raises(ValueError, match=r"has shape \(\d+, \d+\) in the file but"):
        checkpoint.load(path, other)
    _assert_same_params(nnx.state(other), before, rtol=0, atol=0)  # left untouched


def test_a_file_that_is_not_a_checkpoint_is_rejected(tmp_path):
    bad = tmp_path / "x.msgpack"
    bad.write_bytes(serialization.msgpack_serialize({"params": {}}))
    with pytest.raises(ValueError, match="not a vae_lib checkpoint"):
        checkpoint.load(bad, VAE(hidden=8, latent=2, rngs=nnx.Rngs(0)))


def small_vae(seed=0, latent=3):
    return models.VAE(hidden=(16, 8), latent=latent, rngs=nnx.Rngs(seed))


def binary_images(n=12, d=784, seed=0):
    return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.3, (n, d)), np.float32)


def test_load_model_rebuilds_the_vae_from_the_sizes_in_the_file(tmp_path):
    model = small_vae(seed=4)
    path = checkpoint.save(tmp_path / "m.msgpack", model, info={"note": "x"})
    loaded = checkpoint.load_model(path)
    assert (loaded.latent, checkpoint.architecture(loaded)["hidden"]) == (3, [16, 8])
    x = jnp.asarray(binary_images(3))
    assert jnp.allclose(loaded.reconstruct(x), model.reconstruct(x))
    assert checkpoint.read_info(path)["note"] == "x"


def test_load_model_reads_files_that_only_record_hidden_and_latent():
    assert "architecture" not in checkpoint.read_info(zoo.FOLDER / "vae_z2.msgpack")  # an old file
    model = checkpoint.load_model(zoo.FOLDER / "vae_z2.msgpack")
    assert model.latent == 2


def test_load_model_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.load_model(tmp_path / "none.msgpack")
    ae = models.Autoencoder(hidden=8, latent=2, rngs=nnx.Rngs(0))
    path = checkpoint.save(tmp_path / "ae.msgpack", ae)
    with pytest.raises(ValueError, match="does not record a VAE"):
        checkpoint.load_model(path)


# ---------------------------------------------------------------- a whole training state


def _train_state(hidden=16, latent=2, steps=2):
    state = training.create_train_state(VAE(hidden=hidden, latent=latent, rngs=nnx.Rngs(0)), tx=optax.adam(1e-2))
    images = jax.random.uniform(jax.random.key(0), (8, 784))
    for i in range(steps):  # Adam's moments and the step counter away from their initial values
        state, _ = training.jit_train_step(state, images, jax.random.key(i))
    return state


def test_save_tree_and_load_tree_restore_a_training_state_exactly_with_its_info(tmp_path):
    state = _train_state()
    path = checkpoint.save_tree(tmp_path / "run.resume.msgpack", state, info={"history": {"epoch": [1, 2]}})
    like = training.create_train_state(VAE(hidden=16, latent=2, rngs=nnx.Rngs(5)), tx=optax.adam(1e-2))
    restored, info = checkpoint.load_tree(path, like)
    assert info == {"history": {"epoch": [1, 2]}}
    assert int(restored.step) == 2
    assert jax.tree.structure(restored) == jax.tree.structure(like)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_load_tree_refuses_a_file_of_another_structure(tmp_path):
    path = checkpoint.save_tree(tmp_path / "run.resume.msgpack", _train_state(latent=2, steps=0))
    other = training.create_train_state(VAE(hidden=16, latent=3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="another structure"):
        checkpoint.load_tree(path, other)


def test_a_gated_vae_round_trips_through_load_model_and_only_it_records_gated(tmp_path):
    model = VAE(hidden=(16, 8), latent=3, gated=True, rngs=nnx.Rngs(5))
    path = checkpoint.save(tmp_path / "gated.msgpack", model)
    assert checkpoint.read_info(path)["architecture"] == {
        "kind": "VAE",
        "in_features": 784,
        "hidden": [16, 8],
        "latent": 3,
        "gated": True,
    }
    loaded = checkpoint.load_model(path)
    assert loaded.gated and isinstance(loaded.encoder.body.layers[0], models.GatedDense)
    _assert_same_params(nnx.state(loaded, nnx.Param), nnx.state(model, nnx.Param), rtol=0, atol=0)
    x = 30.0 * jnp.asarray(binary_images(3))  # large inputs: the clipped log-variance must be rebuilt too
    for a, b in zip(loaded.encoder(x), model.encoder(x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "gated" not in checkpoint.architecture(small_vae())  # ungated files keep the info they had
