"""vae_lib.step_variants: every way of writing the step trains the library's model.

The benchmark (benchmarks/train_throughput.py) times one row per way; these tests hold the
rows to the same result, and guarded_epoch's switches to the library's fused epoch.
"""

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import load_script

from vae_lib import step_variants, training
from vae_lib.models import VAE


def _params(tree):
    return [np.array(x) for x in jax.tree.leaves(tree)]


def _small_state(seed=0, **kw):
    return training.create_train_state(VAE(hidden=64, latent=4, rngs=nnx.Rngs(seed)), **kw)


def _load_benchmark():
    return load_script("benchmarks/train_throughput.py")


@pytest.mark.parametrize("prefetch, guard", [(True, "none"), (False, "none"), (True, "where"), (False, "where")])
def test_guarded_epoch_gives_the_fused_epochs_results_bit_for_bit_on_a_healthy_run(fashion_train, prefetch, guard):
    images, key = fashion_train[0][:1280], jax.random.key(3)
    ref, m_ref = training.train_epoch_fused(_small_state(), images, key)
    other, m_other = step_variants.guarded_epoch(_small_state(), images, key, prefetch=prefetch, guard=guard)
    assert m_other.keys() == m_ref.keys()
    for name in m_ref:
        np.testing.assert_array_equal(np.asarray(m_other[name]), m_ref[name], err_msg=name)
    for x, y in zip(_params(other.params), _params(ref.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_where_guard_keeps_the_state_from_before_the_first_bad_step(fashion_train):
    images, key, tx = fashion_train[0][:1280], jax.random.key(0), optax.sgd(1e6)  # diverges within a few steps
    rolled, m_rolled = training.train_epoch_fused(_small_state(tx=tx), images, key)
    where, m_where = step_variants.guarded_epoch(_small_state(tx=tx), images, key, guard="where")
    bad = int(np.flatnonzero(~np.isfinite(np.asarray(m_where["loss"])))[0])
    assert 0 < bad < 9, "the learning rate did not make the loss diverge inside the epoch"
    assert int(np.flatnonzero(~np.isfinite(m_rolled["loss"]))[0]) == bad
    np.testing.assert_array_equal(np.asarray(m_where["loss"])[:bad], m_rolled["loss"][:bad])
    for x, y in zip(_params(where.params), _params(rolled.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_without_a_guard_a_bad_step_reaches_the_parameters(fashion_train):
    images, key, tx = fashion_train[0][:1280], jax.random.key(0), optax.sgd(1e6)
    state, _ = step_variants.guarded_epoch(_small_state(tx=tx), images, key, guard="none")
    assert not all(np.all(np.isfinite(x)) for x in _params(state.params))


def test_an_unknown_guard_is_refused_naming_the_two_there_are(fashion_train):
    with pytest.raises(ValueError, match='guard must be "where" or "none"'):
        step_variants.guarded_epoch(_small_state(), fashion_train[0][:256], jax.random.key(0), guard="rollback")


def test_every_compiled_benchmark_row_trains_the_same_model_bit_for_bit_on_the_same_batches(fashion_train):
    # 4 of the 10 batches the images hold: every row must take the same 512 images in the same
    # order (the per-step rows once shuffled all the images, the fused ones only the first 512).
    # All compiled rows run the same arithmetic (this jaxlib, this CPU), so the parameters are equal.
    bench = _load_benchmark()
    images = fashion_train[0][:1280]
    names = [name for name, _, _ in bench.ROWS if name != "eager"]
    runners = {name: bench.Runner(name, images) for name in names}
    for r in runners.values():
        r.run(steps=4)
    ref = _params(runners["jax_jit_donate"].params_state())
    for name in names:
        for x, y in zip(_params(runners[name].params_state()), ref, strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)
    untrained = _params(bench.Runner("jax_jit_donate", images).params_state())
    assert not all(np.array_equal(x, y) for x, y in zip(ref, untrained, strict=True))


def test_each_benchmark_row_names_an_earlier_row_it_changes():
    rows = _load_benchmark().ROWS
    seen = set()
    for name, vs, change in rows:
        assert vs is None or vs in seen, (name, vs)
        assert change, name
        seen.add(name)
    assert rows[0][0] == "eager" and rows[-1][0] == "vae_lib"


def test_benchmark_eager_step_matches_the_compiled_one(fashion_train):
    bench = _load_benchmark()
    images = fashion_train[0][:1280]
    eager, jitted = bench.Runner("eager", images), bench.Runner("jax_jit_donate", images)
    eager.run(steps=2)
    jitted.run(steps=2)
    # Compiled code may add in another order than eager code, so gradients differ in their
    # last bits; Adam divides by the gradient's own size, so where a gradient is nearly zero
    # that can move a weight by up to the learning rate (1e-3) per step. Nearly all agree.
    a = np.concatenate([x.ravel() for x in _params(nnx.state(eager.model, nnx.Param))])
    b = np.concatenate([x.ravel() for x in _params(jitted.params)])
    assert np.max(np.abs(a - b)) <= 2 * bench.LEARNING_RATE
    assert np.mean(np.abs(a - b)) < 1e-7
    assert np.mean(np.isclose(a, b, rtol=1e-5, atol=1e-7)) > 0.9999
