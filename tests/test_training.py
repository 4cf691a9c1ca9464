"""vae_lib.training: the step, the plain and the fused epoch, and fit, on real Fashion-MNIST.

The fused epoch (one compiled loop) must train exactly the steps that calling the compiled
step once per batch trains; fit must lower the loss, stop clearly on a non-finite loss with
the last good parameters, and its hooks (on_epoch_end, schedule, resume, eval_name) must do
what they say. No timings are asserted (the machine is shared): benchmarks/ measures speed.
"""

import functools
import logging
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vae_lib import data, evaluation, losses, training
from vae_lib.models import VAE, Autoencoder

#: One optimizer object for the tests that compare runs: fit's train state holds the optimizer as
#: a static field, so reusing the object lets later runs reuse the compiled epoch.
ADAM = optax.adam(1e-3)
#: A learning rate that makes the loss diverge within a few steps.
DIVERGING = optax.sgd(1e6)
DIVERGE_KEY = jax.random.key(0)


def _params(tree):
    return [np.array(x) for x in jax.tree.leaves(tree)]  # copies: a donated buffer may be reused


def _assert_same_params(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _assert_identical(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _fit_small(images, epochs, **options):
    """fit a fresh small VAE from key 0 with ADAM, no progress bar: the runs the schedule tests compare."""
    model, key = _small_model(), jax.random.key(0)
    return training.fit(model, images, key=key, epochs=epochs, tx=ADAM, progress=False, **options)


def _small_model(seed=0):
    return VAE(hidden=64, latent=4, rngs=nnx.Rngs(seed))


def _small_state(seed=0, **kw):
    return training.create_train_state(_small_model(seed), **kw)


class _Counter:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


@pytest.fixture(scope="module")
def diverging(fashion_train):
    """Epoch 1 of fit(key=DIVERGE_KEY, tx=DIVERGING), run one compiled step at a time, watched on the host.

    Returns the images, that epoch's key, the index of the first step whose loss is not
    finite, the parameters from before it and the losses up to it.
    """
    images = fashion_train[0][:1280]
    epoch_key = jax.random.fold_in(jax.random.split(DIVERGE_KEY)[0], 1)  # fit's key for epoch 1
    state = _small_state(tx=DIVERGING)
    k_perm, k_steps = jax.random.split(epoch_key)
    seen = []
    for i, idx in enumerate(data.batch_indices(k_perm, len(images), 128)):
        before = _params(state.params)
        state, metrics = training.jit_train_step(state, images[idx], jax.random.fold_in(k_steps, i))
        seen.append(float(metrics["loss"]))
        if not math.isfinite(seen[-1]):
            return SimpleNamespace(images=images, epoch_key=epoch_key, bad=i, good=before, losses=seen)
    pytest.fail("the learning rate did not make the loss diverge in the first epoch")


@pytest.fixture(scope="module")
def diverged_fit(diverging):
    """fit on the diverging run: the error it raised and the model it left."""
    model = _small_model()
    with pytest.raises(training.NonFiniteLossError) as info:
        training.fit(model, diverging.images, key=DIVERGE_KEY, epochs=2, tx=DIVERGING, progress=False)
    return info.value, model


# ------------------------------------------------------------------ the plain and the fused epoch


def test_fused_epoch_gives_the_plain_loops_per_step_metrics_and_parameters(fashion_train):
    images = fashion_train[0][:1280]
    key = jax.random.key(7)
    fused, m_fused = training.train_epoch_fused(_small_state(), images, key)
    looped, m_looped = training.train_epoch(_small_state(), images, key)
    # Bit-identical on the machines this was written on; allow the last float32 digits.
    assert m_fused.keys() == m_looped.keys() == {"loss", "log_px_given_z", "kl"}
    for name in m_fused:
        assert m_fused[name].shape == (10,)
        np.testing.assert_allclose(m_fused[name], m_looped[name], rtol=1e-6, err_msg=name)
    _assert_same_params(fused.params, looped.params)
    assert int(fused.step) == int(looped.step) == 10


def test_progress_chunks_leave_the_result_unchanged_and_count_every_step(fashion_train):
    images = fashion_train[0][: 1280 + 50]  # 10 full batches; the 50 left over are dropped
    key = jax.random.key(3)
    whole, m_whole = training.train_epoch_fused(_small_state(), images, key)
    counter = _Counter()
    chunked, m_chunked = training.train_epoch_fused(_small_state(), images, key, progress=counter, chunks=3)
    assert counter.n == 10
    for name in m_whole:
        np.testing.assert_array_equal(m_whole[name], m_chunked[name])
    _assert_same_params(whole.params, chunked.params, rtol=0, atol=0)


def test_a_plain_epoch_needs_at_least_one_full_batch(fashion_train):
    with pytest.raises(ValueError, match="at least one full batch"):
        training.train_epoch(_small_state(), fashion_train[0][:100], jax.random.key(0))


def test_a_fused_epoch_needs_at_least_one_full_batch(fashion_train):
    with pytest.raises(ValueError, match="at least one full batch"):
        training.train_epoch_fused(_small_state(), fashion_train[0][:100], jax.random.key(0))


def test_a_fused_epoch_returns_the_state_before_the_first_bad_step_whatever_the_chunks(diverging):
    bad = diverging.bad
    assert 0 < bad < 9, "the bad step must fall inside the epoch for the chunks to matter"
    results = []
    for chunks in (1, 3, 10):  # the bad step at a chunk's start, in its middle, alone
        counter = _Counter()
        state, m = training.train_epoch_fused(
            _small_state(tx=DIVERGING), diverging.images, diverging.epoch_key, progress=counter, chunks=chunks
        )
        _assert_same_params(state.params, diverging.good)
        assert int(state.step) == bad, "the state counts the good steps only"
        np.testing.assert_allclose(m["loss"][:bad], diverging.losses[:bad], rtol=1e-5)
        assert not np.isfinite(m["loss"][bad]), "the bad step's loss is recorded"
        assert np.all(np.isnan(m["loss"][bad + 1 :])), "steps after the bad one are not run"
        results.append(state.params)
    for other in results[1:]:
        _assert_identical(other, results[0])


# ------------------------------------------------------------------ fit


def test_short_training_lowers_the_test_negative_elbo(fashion_train, fashion_test):
    model = VAE(hidden=200, latent=10, rngs=nnx.Rngs(0))
    test_images = fashion_test[0][:2000]
    before = evaluation.evaluate(model, test_images, jax.random.key(1))["loss"]
    history = training.fit(
        model, fashion_train[0][:12800], key=jax.random.key(2), epochs=2, test_images=test_images, progress=False
    )
    after = evaluation.evaluate(model, test_images, jax.random.key(1))["loss"]
    assert after < before - 100, (before, after)  # about 543 -> 300 nats here
    assert history["epoch"] == [1, 2] and history["train_loss"][1] < history["train_loss"][0]
    assert len(history["test_loss"]) == 2 and abs(history["test_loss"][-1] - after) < 2.0


def test_history_terms_add_up_to_the_loss(fashion_train):
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    h = training.fit(model, fashion_train[0][:1280], key=jax.random.key(0), epochs=1, progress=False)
    assert h["train_loss"][0] == pytest.approx(h["train_kl"][0] - h["train_log_px_given_z"][0], rel=1e-5)


def test_same_seed_gives_the_same_training_run(fashion_train):
    losses = []
    for _ in range(2):
        model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(3))
        losses.append(
            training.fit(model, fashion_train[0][:1280], key=jax.random.key(4), epochs=1, progress=False)["train_loss"]
        )
    assert losses[0] == losses[1]


def test_autoencoder_trains_with_the_same_step(fashion_train):
    model = Autoencoder(hidden=(), latent=16, rngs=nnx.Rngs(0))
    h = training.fit(
        model,
        fashion_train[0][:6400],
        key=jax.random.key(0),
        epochs=2,
        progress=False,
        loss_fn=losses.autoencoder_loss,
        binarize=False,
    )
    assert h["train_loss"][1] < h["train_loss"][0]


def test_fit_trains_what_a_manual_per_step_loop_trains(fashion_train):
    images = fashion_train[0][:1280]
    key = jax.random.key(11)
    model = _small_model()
    history = training.fit(model, images, key=key, epochs=2, progress=False)

    state = _small_state()
    k_train, _ = jax.random.split(key)
    losses = []
    for epoch in (1, 2):
        state, per_step = training.train_epoch(state, images, jax.random.fold_in(k_train, epoch))
        losses.append(float(np.mean(per_step["loss"], dtype=np.float64)))
    assert history["train_loss"] == pytest.approx(losses, rel=1e-6)
    _assert_same_params(nnx.state(model, nnx.Param), state.params)


def test_fit_stops_at_the_first_non_finite_step_and_names_it(diverging, diverged_fit):
    error, _ = diverged_fit
    assert error.step == diverging.bad + 1  # counted from 1
    assert f"non-finite at step {diverging.bad + 1}" in str(error)


def test_fit_leaves_the_model_with_the_parameters_from_before_the_bad_step(diverging, diverged_fit):
    _, model = diverged_fit
    _assert_same_params(nnx.state(model, nnx.Param), diverging.good)


def test_fit_rejects_float_pixels_outside_unit_interval(fashion_train):
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    bad = fashion_train[0][:256].astype(np.float32)  # 0..255, not divided by 255
    with pytest.raises(ValueError, match=r"floats in \[0, 1\].*Divide by 255"):
        training.fit(model, bad, key=jax.random.key(0), epochs=1, progress=False)


def test_fit_rejects_nan_pixels():
    model = VAE(hidden=16, latent=2, rngs=nnx.Rngs(0))
    bad = np.full((256, 784), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        training.fit(model, bad, key=jax.random.key(0), epochs=1, progress=False)


def test_fit_rejects_images_that_do_not_fit_the_model(fashion_train):
    model = VAE(in_features=100, hidden=16, latent=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, 100\); got shape \(128, 784\)"):
        training.fit(model, fashion_train[0][:256], key=jax.random.key(0), epochs=1, progress=False)


# ------------------------------------------------------------------ fit's hooks


def test_on_epoch_end_is_called_after_each_epoch_and_returning_true_stops_training(fashion_train):
    calls = []

    def stop_after_two(epoch, state, history):
        calls.append((epoch, int(state.step), list(history["epoch"])))
        return epoch == 2

    history = training.fit(
        _small_model(),
        fashion_train[0][:1280],
        key=jax.random.key(0),
        epochs=5,
        tx=ADAM,
        progress=False,
        on_epoch_end=stop_after_two,
    )
    assert history["epoch"] == [1, 2] and len(history["train_loss"]) == 2
    assert calls == [(1, 10, [1]), (2, 20, [1, 2])]


def test_eval_name_prefixes_the_held_out_metrics(fashion_train, fashion_test):
    model, key, held_out = _small_model(), jax.random.key(1), fashion_test[0][:500]
    history = training.fit(
        model,
        fashion_train[0][:1280],
        key=key,
        epochs=1,
        tx=ADAM,
        test_images=held_out,
        progress=False,
        eval_name="valid",
    )
    assert set(history) == {
        "epoch",
        "train_loss",
        "train_log_px_given_z",
        "train_kl",
        "valid_loss",
        "valid_log_px_given_z",
        "valid_kl",
    }
    expected = evaluation.evaluate(model, held_out, jax.random.split(key)[1])  # fit's evaluation key
    assert history["valid_loss"] == [pytest.approx(expected["loss"], rel=1e-6)]


def test_a_schedule_compiles_the_epoch_once_per_distinct_loss_object(fashion_train, caplog):
    images = fashion_train[0][:256]
    warm_up = functools.partial(losses.beta_vae_loss, beta=2.0)
    later = functools.partial(losses.beta_vae_loss, beta=3.0)
    _fit_small(images, 1, loss_fn=warm_up)
    caplog.set_level(logging.WARNING, logger="jax")
    with jax.log_compiles(True):
        history = _fit_small(images, 3, schedule=lambda epoch: warm_up if epoch <= 2 else later)
    seen = [r.getMessage()[:80] for r in caplog.records if r.getMessage().startswith("Compiling")]
    assert history["epoch"] == [1, 2, 3]
    # warm_up's epoch was compiled by the first run; only `later` is new
    assert len(seen) == 1, seen


def test_a_schedule_trains_each_epoch_with_its_loss(fashion_train):
    images = fashion_train[0][:256]
    heavy = functools.partial(losses.beta_vae_loss, beta=50.0)
    plain = _fit_small(images, 2)
    scheduled = _fit_small(images, 2, schedule=lambda epoch: losses.vae_loss if epoch == 1 else heavy)
    assert scheduled["train_loss"][0] == plain["train_loss"][0]  # epoch 1: the same loss, the same steps
    # epoch 2 minimises 50 x KL: that objective is recorded beside the true loss, far above the plain one
    assert scheduled["train_objective"][1] > plain["train_loss"][1] + 10
    assert np.isnan(scheduled["train_objective"][0])  # epoch 1's loss reports no objective: the column keeps its place
    assert scheduled["train_loss"][1] == pytest.approx(scheduled["train_kl"][1] - scheduled["train_log_px_given_z"][1])


def test_a_run_cut_after_epoch_two_and_resumed_ends_bit_identical_to_an_uninterrupted_run(fashion_train):
    images, key = fashion_train[0][:1280], jax.random.key(5)
    straight = _small_model()
    uninterrupted = training.fit(straight, images, key=key, epochs=3, tx=ADAM, progress=False)

    saved = {}

    def cut_after_two(epoch, state, history):
        if epoch == 2:
            saved["state"] = jax.tree.map(jnp.copy, state)
            return True
        return False

    cut = training.fit(_small_model(), images, key=key, epochs=3, tx=ADAM, progress=False, on_epoch_end=cut_after_two)
    assert cut["epoch"] == [1, 2]
    resumed_model = _small_model(seed=9)  # another initialisation: everything must come from the saved state
    resumed = training.fit(resumed_model, images, key=key, epochs=3, progress=False, resume=(saved["state"], cut))
    assert resumed == uninterrupted
    _assert_identical(nnx.state(resumed_model, nnx.Param), nnx.state(straight, nnx.Param))


# ------------------------------------------------------------------ an average of the weights


def test_ema_of_params_keeps_the_closed_form_average_of_the_parameters_after_each_update():
    decay, lr, steps = 0.9, 0.1, 6
    tx = optax.chain(optax.sgd(lr), training.ema_of_params(decay))
    params = {"w": jnp.array([3.0, -2.0]), "b": jnp.array(1.5)}
    loss = lambda p: jnp.sum(p["w"] ** 2) + (p["b"] - 0.5) ** 2  # noqa: E731  a toy quadratic
    state = tx.init(params)
    seen = [params]  # p_0, p_1, ..., p_N
    for _ in range(steps):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        seen.append(params)
    # ema_N = decay^N p_0 + (1 - decay) sum_{i=1..N} decay^(N-i) p_i: the weights sum to 1
    weights = [decay**steps] + [(1 - decay) * decay ** (steps - i) for i in range(1, steps + 1)]
    assert sum(weights) == pytest.approx(1.0)
    for name in params:
        expected = sum(w * p[name] for w, p in zip(weights, seen, strict=True))
        np.testing.assert_allclose(state[-1]["ema"][name], expected, rtol=1e-6)
    assert not np.allclose(state[-1]["ema"]["w"], params["w"])  # an average, not the last parameters
    np.testing.assert_allclose(params["w"], seen[0]["w"] * (1 - 2 * lr) ** steps, rtol=1e-6)  # sgd untouched


def test_averaged_params_reads_the_average_from_a_train_state(fashion_train):
    decay = 0.5
    state = _small_state(tx=optax.chain(optax.adam(1e-2), training.ema_of_params(decay)))
    before = _params(state.params)
    _assert_same_params(training.averaged_params(state), state.params, rtol=0, atol=0)  # starts at the parameters
    state, _ = training.train_step(state, fashion_train[0][:64], jax.random.key(0))
    for avg, old, new in zip(_params(training.averaged_params(state)), before, _params(state.params), strict=True):
        np.testing.assert_allclose(avg, decay * old + (1 - decay) * new, rtol=1e-6, atol=1e-7)
    assert jax.tree.structure(training.averaged_params(state)) == jax.tree.structure(state.params)
