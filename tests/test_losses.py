"""vae_lib.losses: every training loss, its value and the gradient it gives the encoder and the decoder.

Each loss has the signature ``loss_fn(params, graphdef, x, key) -> (loss, metrics)``. The
surrogates (score function, sticking the landing, leave-one-out) are checked against their
estimator written out by hand, and each trains with the library's step.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from vae_lib import losses, models, objectives
from vae_lib.losses import score_function_loss, vae_loss
from vae_lib.models import VAE
from vae_lib.training import create_train_state, jit_train_step

K = 4


def _tiny_vae():
    return VAE(in_features=8, hidden=6, latent=2, rngs=nnx.Rngs(0))


def _tiny_batch():
    return jax.random.bernoulli(jax.random.key(2), 0.4, (3, 8)).astype(jnp.float32)


def small_vae(seed=0, latent=3):
    return models.VAE(hidden=(16, 8), latent=latent, rngs=nnx.Rngs(seed))


def binary_images(n=12, d=784, seed=0):
    return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.3, (n, d)), np.float32)


# ---------------------------------------------------------------- beta and free bits


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


@pytest.mark.parametrize("beta, free_bits", [(4.0, 0.0), (0.1, 0.0), (1.0, 50.0)])
def test_metrics_loss_is_the_true_negative_elbo_and_the_objective_is_recorded_beside_it(beta, free_bits):
    graphdef, params = nnx.split(small_vae())
    x, key = binary_images(), jax.random.key(3)
    objective, m = losses.beta_vae_loss(params, graphdef, x, key, beta=beta, free_bits=free_bits)
    _, plain = losses.vae_loss(params, graphdef, x, key)  # the same draw of z
    assert jnp.allclose(m["loss"], plain["loss"], rtol=1e-6)  # -ELBO, whatever beta and the floor
    assert m["objective"] == objective
    kl_paid = 3 * free_bits if free_bits else beta * m["kl"]  # 3 latent dimensions, all under a floor of 50
    assert float(m["objective"] - m["loss"]) == pytest.approx(float(kl_paid - m["kl"]), rel=1e-3)


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


# ---------------------------------------------------------------- the score-function surrogate


@pytest.fixture(scope="module")
def surrogate():
    """Gradient and metrics of the score-function surrogate (posterior-mean baseline)."""
    model, x, key = _tiny_vae(), _tiny_batch(), jax.random.key(9)
    graphdef, params = nnx.split(model)
    loss_fn = functools.partial(score_function_loss, baseline="posterior_mean")
    grads, metrics = jax.jit(jax.grad(loss_fn, has_aux=True), static_argnums=1)(params, graphdef, x, key)
    return model, x, key, grads, metrics


def test_score_loss_gives_the_decoder_the_ordinary_gradient_and_reports_the_true_loss(surrogate):
    # The baseline decodes the posterior mean: stop_gradient must keep it out of theta's gradient.
    model, x, key, g_sf, m_sf = surrogate
    graphdef, params = nnx.split(model)
    g_pw, m_pw = jax.jit(jax.grad(vae_loss, has_aux=True), static_argnums=1)(params, graphdef, x, key)
    for a, b in zip(jax.tree.leaves(g_sf["decoder"]), jax.tree.leaves(g_pw["decoder"]), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name in ("loss", "log_px_given_z", "kl"):
        np.testing.assert_allclose(m_sf[name], m_pw[name], rtol=1e-6)


def test_score_loss_encoder_gradient_is_the_score_function_estimate(surrogate):
    # Mean over examples of (log p(x|z) - b(x)) grad_phi log q(z|x) - grad_phi KL, written out,
    # with b(x) = log p(x | z = encoder mean) held fixed.
    from vae_lib.objectives import bernoulli_log_likelihood, gaussian_log_density, kl_to_standard_normal, reparameterize

    model, x, key, grads, _ = surrogate
    mean, logvar = model.encoder(x)
    z = reparameterize(key, mean, logvar)
    weight = bernoulli_log_likelihood(x, model.decoder(z)) - bernoulli_log_likelihood(x, model.decoder(mean))

    def by_hand(enc):
        m, lv = nnx.merge(nnx.graphdef(model.encoder), enc)(x)
        return -jnp.mean(weight * gaussian_log_density(z, m, lv) - kl_to_standard_normal(m, lv))

    want = jax.jit(jax.grad(by_hand))(nnx.state(model.encoder))
    for a, b in zip(jax.tree.leaves(grads["encoder"]), jax.tree.leaves(want), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_score_loss_trains_with_the_library_train_step():
    model = _tiny_vae()
    state = create_train_state(
        model, learning_rate=1e-2, loss_fn=functools.partial(score_function_loss, baseline="batch")
    )
    images = jax.random.uniform(jax.random.key(0), (16, 8))
    before = ravel_pytree(state.params["encoder"])[0]
    for i in range(3):
        state, metrics = jit_train_step(state, images, jax.random.key(i))
        assert np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 3
    assert float(jnp.max(jnp.abs(ravel_pytree(state.params["encoder"])[0] - before))) > 0


def test_batch_baseline_needs_two_examples():
    model = _tiny_vae()
    graphdef, params = nnx.split(model)
    with pytest.raises(ValueError, match="at least 2"):
        score_function_loss(params, graphdef, _tiny_batch()[:1], jax.random.key(0), "batch")


def test_an_unknown_baseline_name_is_refused_with_the_known_ones():
    graphdef, params = nnx.split(_tiny_vae())
    with pytest.raises(ValueError, match=r"baseline must be a number or one of \('batch', 'posterior_mean'\)"):
        score_function_loss(params, graphdef, _tiny_batch(), jax.random.key(0), "median")


# ---------------------------------------------------------------- K samples per image


def test_pathwise_loss_with_one_sample_is_vae_loss():
    model, x, key = _tiny_vae(), _tiny_batch(), jax.random.key(4)
    graphdef, params = nnx.split(model)
    g_ref, m_ref = jax.grad(vae_loss, has_aux=True)(params, graphdef, x, key)
    g, m = jax.grad(losses.pathwise_loss, has_aux=True)(params, graphdef, x, key)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for name in ("loss", "log_px_given_z", "kl"):
        np.testing.assert_allclose(m[name], m_ref[name], rtol=1e-6)


def test_leave_one_out_loss_encoder_gradient_is_the_rloo_estimate():
    # (1/K) sum_k (log p(x|z_k) - b_k) grad_phi log q(z_k|x) - grad_phi KL, mean over examples,
    # written out with b_k the mean of log p(x|z_j) over the other samples j of the same image.
    from vae_lib.objectives import bernoulli_log_likelihood, gaussian_log_density, kl_to_standard_normal, reparameterize

    model, x, key = _tiny_vae(), _tiny_batch(), jax.random.key(6)
    graphdef, params = nnx.split(model)
    grads, _ = jax.grad(losses.leave_one_out_score_loss, has_aux=True)(params, graphdef, x, key, K)
    mean, logvar = model.encoder(x)
    z = jnp.stack([reparameterize(k, mean, logvar) for k in jax.random.split(key, K)])
    log_px = np.stack([np.asarray(bernoulli_log_likelihood(x, model.decoder(zk))) for zk in z])
    weight = np.stack([log_px[k] - np.delete(log_px, k, axis=0).mean(0) for k in range(K)])

    def by_hand(enc):
        m, lv = nnx.merge(nnx.graphdef(model.encoder), enc)(x)
        score_term = sum(weight[k] * gaussian_log_density(z[k], m, lv) for k in range(K)) / K
        return -jnp.mean(score_term - kl_to_standard_normal(m, lv))

    want = jax.grad(by_hand)(nnx.state(model.encoder))
    for a, b in zip(jax.tree.leaves(grads["encoder"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss_fn", [losses.leave_one_out_score_loss, losses.sticking_the_landing_loss])
def test_k_sample_surrogate_gives_the_decoder_the_pathwise_gradient_and_reports_the_true_loss(loss_fn):
    model, x, key = _tiny_vae(), _tiny_batch(), jax.random.key(8)
    graphdef, params = nnx.split(model)
    g_pw, m_pw = jax.grad(losses.pathwise_loss, has_aux=True)(params, graphdef, x, key, K)
    g, m = jax.grad(loss_fn, has_aux=True)(params, graphdef, x, key, K)
    for a, b in zip(jax.tree.leaves(g["decoder"]), jax.tree.leaves(g_pw["decoder"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name in ("loss", "log_px_given_z", "kl"):
        np.testing.assert_allclose(m[name], m_pw[name], rtol=1e-6)


def _exact_posterior_vae():
    """A tiny VAE whose encoder is the exact posterior: the decoder ignores z (its last kernel
    is zero), so p(z|x) = p(z) = N(0, I), and the encoder outputs mean 0 and logvar 0 for every
    x (zero output layers)."""
    model = _tiny_vae()
    last = model.decoder.net.layers[-1]
    last.kernel[...] = jnp.zeros_like(last.kernel[...])
    for layer in (model.encoder.mean, model.encoder.logvar):
        layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
        layer.bias[...] = jnp.zeros_like(layer.bias[...])
    return model


def test_sticking_the_landing_gradient_vanishes_when_q_is_the_exact_posterior():
    # log p(x, z) - log q(z|x) = log p(x) for every z, so STL's estimate is exactly zero for
    # every draw; the full pathwise gradient of the single-sample ELBO is not: it keeps the
    # score term -grad_phi log q(z|x), zero only on average.
    from vae_lib.objectives import elbo_single_sample

    model, x = _exact_posterior_vae(), _tiny_batch()
    graphdef, params = nnx.split(model)

    def single_sample_elbo_loss(p, key):
        m = nnx.merge(graphdef, p)
        logits, z, mean, logvar = m(x, key)
        return -jnp.mean(elbo_single_sample(x, logits, z, mean, logvar))

    full, stl = [], []
    for i in range(4):
        key = jax.random.key(20 + i)
        full.append(ravel_pytree(jax.grad(single_sample_elbo_loss)(params, key)["encoder"])[0])
        g, _ = jax.grad(losses.sticking_the_landing_loss, has_aux=True)(params, graphdef, x, key)
        stl.append(ravel_pytree(g["encoder"])[0])
    assert float(jnp.max(jnp.abs(jnp.stack(stl)))) < 1e-6
    assert float(jnp.min(jnp.linalg.norm(jnp.stack(full), axis=1))) > 0.1


def test_sticking_the_landing_loss_is_minus_the_mean_log_importance_weight_at_the_same_draws():
    model, x, key = _tiny_vae(), _tiny_batch(), jax.random.key(12)
    graphdef, params = nnx.split(model)
    value, _ = losses.sticking_the_landing_loss(params, graphdef, x, key)
    logits, z, mean, logvar = model(x, key)  # one sample per image: the key's own draw
    log_w = objectives.log_importance_weight(objectives.bernoulli_log_likelihood(x, logits), z, mean, logvar)
    np.testing.assert_allclose(value, -jnp.mean(log_w), rtol=1e-5)


@pytest.mark.parametrize(
    "loss_fn",
    [losses.pathwise_loss, losses.sticking_the_landing_loss, losses.leave_one_out_score_loss],
    ids=["pathwise", "stl", "rloo"],
)
def test_k_sample_loss_trains_with_the_library_train_step(loss_fn):
    model = _tiny_vae()
    state = create_train_state(model, learning_rate=1e-2, loss_fn=functools.partial(loss_fn, num_samples=K))
    images = jax.random.uniform(jax.random.key(0), (16, 8))
    before = ravel_pytree(state.params["encoder"])[0]
    for i in range(3):
        state, metrics = jit_train_step(state, images, jax.random.key(i))
        assert np.isfinite(float(metrics["loss"]))
    assert float(jnp.max(jnp.abs(ravel_pytree(state.params["encoder"])[0] - before))) > 0


def test_leave_one_out_needs_two_samples_per_image():
    graphdef, params = nnx.split(_tiny_vae())
    with pytest.raises(ValueError, match=">= 2"):
        losses.leave_one_out_score_loss(params, graphdef, _tiny_batch(), jax.random.key(0), 1)
