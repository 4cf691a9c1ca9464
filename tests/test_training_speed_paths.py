"""The fast training paths compute the same thing as the plain per-step loop.

vae_lib.training runs an epoch inside one compiled loop (the data on the device, the
step key folded in there). These tests pin that it trains exactly the steps that calling
``train_step`` once per batch trains, that stopping on a non-finite loss still works
there, that the benchmark's variants agree with it, that the FLOP count used for the
benchmark's ceiling is the one of the compiled step, and that checkpoints round-trip.
No timings are asserted here (the machine is shared): benchmarks/train_throughput.py
measures speed.
"""

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import load_script

from vae_lib import checkpoint, data, training
from vae_lib.cost import step_matmul_flops, step_matmul_shapes
from vae_lib.models import VAE


def _params(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_same_params(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _small_state(seed=0, **kw):
    return training.create_train_state(VAE(hidden=64, latent=4, rngs=nnx.Rngs(seed)), **kw)


class _Counter:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


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


def test_fit_trains_what_a_manual_per_step_loop_trains(fashion_train):
    images = fashion_train[0][:1280]
    key = jax.random.key(11)
    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    history = training.fit(model, images, key=key, epochs=2, progress=False)

    state = _small_state()
    k_train, _ = jax.random.split(key)
    losses = []
    for epoch in (1, 2):
        state, per_step = training.train_epoch(state, images, jax.random.fold_in(k_train, epoch))
        losses.append(float(np.mean(per_step["loss"], dtype=np.float64)))
    assert history["train_loss"] == pytest.approx(losses, rel=1e-6)
    _assert_same_params(nnx.state(model, nnx.Param), state.params)


def test_fused_epoch_stops_at_the_first_non_finite_step_with_the_last_good_parameters(fashion_train):
    images = fashion_train[0][:1280]
    key = jax.random.key(0)
    tx = optax.sgd(1e6)  # diverges within a few steps
    # Reference: the per-step path, watching each loss on the host.
    state = _small_state(tx=tx)
    k_perm, k_steps = jax.random.split(jax.random.fold_in(jax.random.split(key)[0], 1))
    good, first_bad = None, None
    for i, idx in enumerate(data.batch_indices(k_perm, len(images), 128)):
        before = _params(state.params)
        state, metrics = training.jit_train_step(state, images[idx], jax.random.fold_in(k_steps, i))
        if not math.isfinite(float(metrics["loss"])):
            good, first_bad = before, i + 1
            break
    assert first_bad is not None, "the learning rate did not make the loss diverge"

    model = VAE(hidden=64, latent=4, rngs=nnx.Rngs(0))
    with pytest.raises(training.NonFiniteLossError) as info:
        training.fit(model, images, key=key, epochs=1, tx=tx, progress=False)
    assert info.value.step == first_bad
    assert f"step {first_bad}" in str(info.value)
    for x, y in zip(_params(nnx.state(model, nnx.Param)), good, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_an_epoch_needs_at_least_one_full_batch(fashion_train):
    with pytest.raises(ValueError, match="at least one full batch"):
        training.train_epoch_fused(_small_state(), fashion_train[0][:100], jax.random.key(0))
    with pytest.raises(ValueError, match="at least one full batch"):
        training.train_epoch(_small_state(), fashion_train[0][:100], jax.random.key(0))


def _dot_flops(jaxpr) -> int:
    """FLOPs of every dot_general in a jaxpr, sub-jaxprs included (2 per multiply-add)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += 2 * math.prod(out) * math.prod(lhs[d] for d in contract)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _dot_flops(sub)
    return total


@pytest.mark.parametrize("hidden, latent", [(400, 20), ((300, 100), 8), ((), 5)])
def test_step_matmul_flops_is_what_the_traced_step_multiplies(hidden, latent):
    state = training.create_train_state(VAE(hidden=hidden, latent=latent, rngs=nnx.Rngs(0)))
    images = jnp.zeros((32, 28, 28), jnp.uint8)
    jaxpr = jax.make_jaxpr(training.train_step)(state, images, jax.random.key(0)).jaxpr
    assert _dot_flops(jaxpr) == 32 * step_matmul_flops(784, hidden, latent)


def test_step_matmul_shapes_are_the_products_of_the_traced_step():
    state = training.create_train_state(VAE(hidden=400, latent=20, rngs=nnx.Rngs(0)))
    images = jnp.zeros((128, 28, 28), jnp.uint8)
    jaxpr = jax.make_jaxpr(training.train_step)(state, images, jax.random.key(0)).jaxpr
    shapes = step_matmul_shapes(128, 784, 400, 20)
    assert len(shapes) == 14
    assert _dot_flops(jaxpr) == sum(2 * a[0] * a[1] * b[1] for a, b in shapes)


def _load_benchmark():
    return load_script("benchmarks/train_throughput.py")


def test_every_compiled_benchmark_row_trains_the_same_model(fashion_train):
    bench = _load_benchmark()
    images = fashion_train[0][:1280]
    names = [name for name, _, _ in bench.ROWS if name != "eager"]
    runners = {name: bench.Runner(name, images) for name in names}
    for r in runners.values():
        r.run()
    ref = runners["jax_jit_donate"].params_state()
    for name in names:
        _assert_same_params(runners[name].params_state(), ref, rtol=1e-5, atol=1e-6)


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
    from flax import serialization

    bad.write_bytes(serialization.msgpack_serialize({"params": {}}))
    with pytest.raises(ValueError, match="not a vae_lib checkpoint"):
        checkpoint.load(bad, VAE(hidden=8, latent=2, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("options", [{"guard": "where"}, {"guard": "none"}, {"prefetch": False}])
def test_the_fused_epochs_switches_do_not_change_a_healthy_run(fashion_train, options):
    images, key = fashion_train[0][:1280], jax.random.key(3)
    ref, m_ref = training.train_epoch_fused(_small_state(), images, key)
    other, m_other = training.train_epoch_fused(_small_state(), images, key, **options)
    for name in m_ref:
        np.testing.assert_array_equal(m_other[name], m_ref[name], err_msg=name)
    _assert_same_params(other.params, ref.params, rtol=0, atol=0)


def test_the_rollback_guard_returns_the_state_before_the_first_bad_step_in_any_chunk(fashion_train):
    images, key, tx = fashion_train[0][:1280], jax.random.key(0), optax.sgd(1e6)  # diverges within a few steps
    where, m_where = training.train_epoch_fused(_small_state(tx=tx), images, key, guard="where")
    bad = int(np.flatnonzero(~np.isfinite(m_where["loss"]))[0])
    assert 0 < bad < 9, "the learning rate did not make the loss diverge inside the epoch"
    for chunks in (1, 3, 10):  # the bad step at a chunk's start, in its middle, alone
        counter = _Counter()
        rolled, m = training.train_epoch_fused(_small_state(tx=tx), images, key, progress=counter, chunks=chunks)
        _assert_same_params(rolled.params, where.params, rtol=0, atol=0)
        assert int(rolled.step) == bad, "the state counts the good steps only"
        np.testing.assert_array_equal(m["loss"][: bad + 1], m_where["loss"][: bad + 1])
        assert np.all(np.isnan(m["loss"][bad + 1 :])), "steps after the bad one are not run"


def test_an_unknown_guard_is_refused(fashion_train):
    with pytest.raises(ValueError, match='guard must be "rollback", "where" or "none"'):
        training.train_epoch_fused(_small_state(), fashion_train[0][:256], jax.random.key(0), guard="maybe")


@pytest.mark.parametrize("cores", ["2cores", "1core"])
def test_the_stored_benchmark_results_have_every_row_of_the_benchmark(cores):
    from pathlib import Path

    from vae_lib.cost import read_throughput

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    rows, info = read_throughput(results / f"train_throughput_{cores}.jsonl")
    bench = _load_benchmark()
    assert [(n, r["vs"], r["change"]) for n, r in rows.items()] == bench.ROWS, "re-run `make bench`"
    assert all(len(r["rounds"]) == bench.ROUNDS for r in rows.values())
    assert info["ceiling_images_per_s"] == pytest.approx(info["matmul_gflops"] * 1e9 / step_matmul_flops(), rel=1e-3)


def test_reading_a_file_without_benchmark_rows_says_how_to_make_one(tmp_path):
    from vae_lib.cost import read_throughput

    (tmp_path / "x.jsonl").write_text('{"matmul_gflops": 1.0}\n')
    with pytest.raises(ValueError, match="make bench"):
        read_throughput(tmp_path / "x.jsonl")
