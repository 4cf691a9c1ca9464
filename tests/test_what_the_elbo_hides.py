"""The measurements of notebook 06: beta and free bits, L_k over a test set, active units,
the aggregate posterior's split of the KL, the gaps, load_model, and the pretraining command."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_lib import checkpoint, evaluation, gaps, losses, models, objectives, posterior_diagnostics, pretrain


def small_vae(seed=0, latent=3):
    return models.VAE(hidden=(16, 8), latent=latent, rngs=nnx.Rngs(seed))


def binary_images(n=12, d=784, seed=0):
    return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.3, (n, d)), np.float32)


def z_blind_vae(latent=2, seed=0):
    """A VAE whose decoder ignores z (first decoder layer zero), so p(x|z) = p(x) exactly."""
    model = small_vae(seed, latent)
    first = model.decoder.net.layers[0]
    first.kernel[...] = jnp.zeros_like(first.kernel[...])
    return model


# ---------------------------------------------------------------- beta and free bits
def test_kl_per_dimension_sums_to_the_closed_form_kl():
    mean, logvar = jax.random.normal(jax.random.key(1), (2, 5, 4))
    per_dim = objectives.kl_per_dimension(mean, logvar)
    assert per_dim.shape == (5, 4)
    assert jnp.allclose(per_dim.sum(-1), objectives.kl_to_standard_normal(mean, logvar))


def test_beta_one_without_free_bits_is_the_vae_loss():
    graphdef, params = nnx.split(small_vae())
    x, key = binary_images(), jax.random.key(3)
    a, ma = losses.beta_vae_loss(params, graphdef, x, key)
    b, mb = losses.vae_loss(params, graphdef, x, key)
    assert jnp.allclose(a, b) and jnp.allclose(ma["kl"], mb["kl"])


def test_beta_weighs_the_kl_and_reports_the_true_kl():
    graphdef, params = nnx.split(small_vae())
    x, key = binary_images(), jax.random.key(3)
    loss, m = losses.beta_vae_loss(params, graphdef, x, key, beta=4.0)
    assert jnp.allclose(loss, -m["log_px_given_z"] + 4.0 * m["kl"], rtol=1e-6)
    assert jnp.allclose(m["kl"], losses.vae_loss(params, graphdef, x, key)[1]["kl"])


def test_a_dimension_under_the_free_bits_floor_costs_the_floor_and_gets_no_kl_gradient():
    graphdef, params = nnx.split(small_vae())
    x, key = binary_images(), jax.random.key(3)
    floor = 50.0  # far above any dimension's KL here
    loss, m = losses.beta_vae_loss(params, graphdef, x, key, free_bits=floor)
    assert jnp.allclose(loss, -m["log_px_given_z"] + 3 * floor, rtol=1e-6)

    def kl_part(p):  # the objective minus the reconstruction term
        value, metrics = losses.beta_vae_loss(p, graphdef, x, key, free_bits=floor)
        return value + metrics["log_px_given_z"]

    grads = jax.grad(kl_part)(params)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) == 0.0


# ---------------------------------------------------------------- L_k over a test set
def test_log_likelihood_is_exact_when_the_decoder_ignores_z_and_q_is_the_prior():
    model = z_blind_vae()
    for layer in (model.encoder.mean, model.encoder.logvar):  # q(z|x) = N(0, I) = p(z)
        layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
        layer.bias[...] = jnp.zeros_like(layer.bias[...])
    x = binary_images(6)
    exact = objectives.bernoulli_log_likelihood(x, model.decoder(jnp.zeros((6, 2))))
    out = evaluation.log_likelihood(model, x, jax.random.key(0), k=40, batch_size=4, chunk=20)
    assert np.allclose(out["log_px"], exact, atol=1e-3) and np.allclose(out["elbo"], exact, atol=1e-3)


def test_log_likelihood_approaches_log_px_from_below_as_k_grows():
    model = z_blind_vae()  # log w = log p(x) + log p(z) - log q(z|x): L_k -> log p(x), ELBO = log p(x) - KL
    # q = N(2, e I): off the prior's centre and wider than it, so the weights are bounded
    for layer, bias in ((model.encoder.mean, 2.0), (model.encoder.logvar, 1.0)):
        layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
        layer.bias[...] = jnp.full_like(layer.bias[...], bias)
    x = binary_images(40)
    exact = np.asarray(objectives.bernoulli_log_likelihood(x, model.decoder(jnp.zeros((40, 2)))))
    mean, logvar = model.encoder(jnp.asarray(x))
    kl = np.asarray(objectives.kl_to_standard_normal(mean, logvar))
    small = evaluation.log_likelihood(model, x, jax.random.key(0), k=2, chunk=2)
    large = evaluation.log_likelihood(model, x, jax.random.key(0), k=4000, chunk=500)
    assert abs(np.mean(large["log_px"] - exact)) < 0.03 and np.max(np.abs(large["log_px"] - exact)) < 0.3
    assert 0 <= np.mean(exact - large["log_px"]) < np.mean(exact - small["log_px"])
    assert abs(np.mean(large["elbo"] - (exact - kl))) < 0.03


def test_log_likelihood_does_not_depend_on_the_batch_size():
    model, x = small_vae(), binary_images(10)
    a = evaluation.log_likelihood(model, x, jax.random.key(5), k=60, batch_size=10, chunk=20)
    b = evaluation.log_likelihood(model, x, jax.random.key(5), k=60, batch_size=3, chunk=20)
    assert np.allclose(a["log_px"], b["log_px"], atol=1e-4) and np.allclose(a["elbo"], b["elbo"], atol=1e-4)


def test_log_likelihood_rejects_k_that_is_not_a_multiple_of_the_chunk():
    with pytest.raises(ValueError, match="multiple of chunk"):
        evaluation.log_likelihood(small_vae(), binary_images(2), jax.random.key(0), k=100, chunk=30)


def test_binarize_once_gives_binary_images_that_follow_the_grey_levels():
    grey = np.full((200, 28, 28), 64, np.uint8)  # grey level 64/255
    x = evaluation.binarize_once(grey, jax.random.key(0))
    assert x.shape == (200, 784) and set(np.unique(x)) <= {0.0, 1.0}
    assert abs(x.mean() - 64 / 255) < 0.01


# ---------------------------------------------------------------- active units, aggregate posterior
def test_active_units_counts_dimensions_whose_posterior_mean_moves_with_x():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1, 500), rng.normal(0, 0.3, 500), rng.normal(0, 0.05, 500)], axis=1)
    assert posterior_diagnostics.active_units(means) == 2  # variances 1, 0.09, 0.0025 against 0.01
    assert posterior_diagnostics.active_units(means, threshold=0.001) == 3


def test_identical_posteriors_carry_no_information_so_the_kl_is_all_marginal():
    means, logvars = np.tile([[0.5, -1.0]], (400, 1)), np.tile([[-1.0, 0.3]], (400, 1))
    out = posterior_diagnostics.kl_decomposition(means, logvars, jax.random.key(0), draws=100)
    assert abs(out["mutual_information"]) < 0.02  # zero, up to the Monte Carlo error of the marginal KL


def test_far_apart_sharp_posteriors_carry_log_n_nats():
    n = 50
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(5.0)), -1).reshape(n, 2) - [4.5, 2.0]
    means = grid  # codes 1 apart, sd 0.01: no two posteriors overlap
    logvars = np.full((n, 2), 2 * math.log(0.01))
    out = posterior_diagnostics.kl_decomposition(means, logvars, jax.random.key(0), draws=400)
    assert out["mutual_information"] == pytest.approx(math.log(n), abs=0.03)  # up to Monte Carlo error
    assert out["average_kl"] == pytest.approx(out["mutual_information"] + out["marginal_kl"])


def test_the_aggregate_density_of_one_posterior_is_that_gaussian_whatever_the_chunk():
    z = jax.random.normal(jax.random.key(0), (37, 3))
    m, lv = jnp.array([[0.2, -0.4, 1.0]]), jnp.array([[0.1, -0.3, 0.5]])
    one = objectives.gaussian_log_density(z, m, lv)
    assert jnp.allclose(posterior_diagnostics.aggregate_log_density(z, m, lv, chunk=5), one, atol=1e-5)


def test_diagnostics_reject_codes_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, J\)"):
        posterior_diagnostics.active_units(np.zeros(10))
    with pytest.raises(ValueError, match="same encoder call"):
        posterior_diagnostics.kl_decomposition(np.zeros((5, 2)), np.zeros((5, 3)), jax.random.key(0))


# ---------------------------------------------------------------- the gaps
def test_optimising_each_images_q_raises_its_elbo_from_the_encoders():
    model, x = small_vae(latent=4), jnp.asarray(binary_images(8))
    mean, logvar = model.encoder(x)
    key = jax.random.key(1)
    before = gaps.elbo_of_q(model, x, mean, logvar, key, samples=500)
    m2, lv2, trace = gaps.optimize_q(model, x, mean, logvar, jax.random.key(2), steps=200, learning_rate=0.05)
    after = gaps.elbo_of_q(model, x, m2, lv2, key, samples=500)
    assert trace.shape == (200,) and float(trace[-20:].mean()) < float(trace[:20].mean())
    assert float(jnp.mean(after - before)) > 0.1


def test_the_two_gaps_add_up_to_the_total():
    out = gaps.split_gap([-100.0, -90.0], [-110.0, -95.0], [-104.0, -92.0])
    assert out == pytest.approx({"total": 7.5, "approximation": 3.0, "amortization": 4.5})


def test_elbo_of_q_rejects_parameters_for_another_number_of_images():
    with pytest.raises(ValueError, match="same N images"):
        gaps.elbo_of_q(small_vae(), binary_images(4), jnp.zeros((3, 3)), jnp.zeros((3, 3)), jax.random.key(0))


# ---------------------------------------------------------------- load_model
def test_load_model_rebuilds_the_vae_from_the_sizes_in_the_file(tmp_path):
    model = small_vae(seed=4)
    path = checkpoint.save(tmp_path / "m.msgpack", model, info={"note": "x"})
    loaded = checkpoint.load_model(path)
    assert (loaded.latent, checkpoint.architecture(loaded)["hidden"]) == (3, [16, 8])
    x = jnp.asarray(binary_images(3))
    assert jnp.allclose(loaded.reconstruct(x), model.reconstruct(x))
    assert checkpoint.read_info(path)["note"] == "x"


def test_load_model_reads_files_that_only_record_hidden_and_latent():
    model = checkpoint.load_model(pretrain.FOLDER / "vae_z2.msgpack")
    assert model.latent == 2


def test_load_model_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.load_model(tmp_path / "none.msgpack")
    ae = models.Autoencoder(hidden=8, latent=2, rngs=nnx.Rngs(0))
    path = checkpoint.save(tmp_path / "ae.msgpack", ae)
    with pytest.raises(ValueError, match="does not record a VAE"):
        checkpoint.load_model(path)


# ---------------------------------------------------------------- the pretraining command
def test_the_validation_split_is_disjoint_and_seeded():
    images = np.arange(12_000)
    train, valid = pretrain.split_train_validation(images)
    assert len(valid) == 10_000 and len(train) == 2_000
    assert not set(train) & set(valid)
    assert np.array_equal(valid, pretrain.split_train_validation(images)[1])


@pytest.fixture
def tiny_recipe(monkeypatch):
    def put(**kw):
        base = {"hidden": (32,), "latent": 2, "seed": 0, "max_epochs": 3, "batch_size": 64}
        monkeypatch.setitem(pretrain.RECIPES, "tiny", pretrain.Recipe(**{**base, **kw}))
        return "tiny"

    return put


def test_early_stopping_ends_after_patience_epochs_without_a_better_validation_loss(tiny_recipe, fashion_train):
    name = tiny_recipe(learning_rate=0.0, patience=2, max_epochs=10)  # no step changes anything
    images = fashion_train[0][:640]
    _, history = pretrain.train(name, images, images[:200], resume_folder=None, log=lambda s: None)
    assert history["epoch"] == [1, 2, 3] and history["best_epoch"] == 1 and history["stopped"] == "early"


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tiny_recipe, fashion_train, tmp_path):
    name = tiny_recipe(max_epochs=2)
    images, valid = fashion_train[0][:640], fashion_train[0][640:840]
    quiet = functools.partial(lambda s: None)
    straight, _ = pretrain.train(name, images, valid, resume_folder=None, log=quiet)
    pretrain.train(name, images, valid, max_epochs=1, resume_folder=tmp_path, log=quiet)  # cut after epoch 1
    lines = []
    resumed, history = pretrain.train(name, images, valid, resume_folder=tmp_path, log=lines.append)
    assert "resuming after epoch 1" in lines[0] and history["epoch"] == [1, 2]
    a, b = nnx.state(straight, nnx.Param), nnx.state(resumed, nnx.Param)
    assert all(np.allclose(u, v, atol=1e-6) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_warm_up_raises_beta_linearly_to_its_value(tiny_recipe, fashion_train):
    name = tiny_recipe(warmup_epochs=2, max_epochs=3)
    images = fashion_train[0][:640]
    _, history = pretrain.train(name, images, images[:200], resume_folder=None, log=lambda s: None)
    assert history["beta"] == [0.5, 1.0, 1.0]


def test_epochs_with_the_same_beta_share_one_loss_so_the_epoch_is_compiled_once():
    recipe = pretrain.RECIPES["sweep_beta3"]
    assert pretrain._loss(recipe, 1) is pretrain._loss(recipe, 7)
    warm = pretrain.RECIPES["sweep_z64_warmup"]
    assert pretrain._loss(warm, 1) is not pretrain._loss(warm, 2)  # beta 0.2, then 0.4
    assert pretrain._loss(warm, 6) is pretrain._loss(warm, 9) is losses.vae_loss


def test_a_short_try_must_not_overwrite_the_stored_models(capsys):
    with pytest.raises(SystemExit):
        pretrain.main(["sweep_z2", "--max-epochs", "1"])
    assert "need --out" in capsys.readouterr().err


def test_an_unknown_recipe_is_named(capsys):
    with pytest.raises(ValueError, match="No recipe called 'nope'"):
        pretrain.main(["nope", "--out", "x"])


# ---------------------------------------------------------------- the stored models of notebook 06
@pytest.mark.parametrize("name", sorted(pretrain.RECIPES))
def test_each_stored_model_of_notebook_06_was_made_with_its_recipe(name):
    info = checkpoint.read_info(pretrain.FOLDER / f"{name}.msgpack")
    recipe = pretrain.RECIPES[name]
    assert (tuple(info["hidden"]), info["latent"], info["seed"], info["beta"], info["free_bits"]) == (
        recipe.hidden,
        recipe.latent,
        recipe.seed,
        recipe.beta,
        recipe.free_bits,
    )
    assert info["architecture"]["hidden"] == list(recipe.hidden)
    assert len(info["history"]["epoch"]) <= recipe.max_epochs


def test_the_converged_model_was_evaluated_on_the_whole_test_set_with_5000_samples():
    e = checkpoint.read_info(pretrain.FOLDER / "vae_converged.msgpack")["evaluation"]
    assert (e["k"], e["test_images"], len(e["log_px"]), len(e["elbo"])) == (5000, 10000, 10000, 10000)
    assert e["nll"] == pytest.approx(-np.mean(e["log_px"]), abs=1e-3)
    assert np.mean(np.array(e["log_px"]) >= np.array(e["elbo"])) > 0.99  # L_5000 above the ELBO, image by image


def test_the_converged_model_stopped_early_on_its_validation_loss():
    h = checkpoint.read_info(pretrain.FOLDER / "vae_converged.msgpack")["history"]
    assert h["stopped"] == "early" and h["epoch"][-1] - h["best_epoch"] > pretrain.RECIPES["vae_converged"].patience - 1
    assert min(h["valid_loss"]) == h["valid_loss"][h["epoch"].index(h["best_epoch"])]
