"""vae_lib.sharding and vae_lib.sharded_training: on a mesh, the library's step trains what it trains on one device.

Tests that need several devices run in a fresh Python process with simulated CPU devices
(``@on_cpu_devices``): JAX fixes the number of CPU devices when its backend starts, so the
process running the rest of the suite, which has one, cannot grow more. Parameters are
compared with ``vae_lib.distributed.TOLERANCE``: splitting a sum over devices changes the
order of float additions, and Adam's first steps turn a rounding difference in a gradient near
zero into a visible difference in that parameter's step (at most a fraction of the learning
rate, 1e-3). Gradients themselves agree to about 1e-7 of their size.
"""

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree

import jax

_DEVICES_ENV = "VAE_LIB_TEST_CPU_DEVICES"
if os.environ.get(_DEVICES_ENV):  # in the child process of @on_cpu_devices, before JAX starts its backend
    jax.config.update("jax_num_cpu_devices", int(os.environ[_DEVICES_ENV]))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from vae_lib import data, sharded_training, sharding, training  # noqa: E402
from vae_lib.distributed import TOLERANCE  # noqa: E402
from vae_lib.models import VAE  # noqa: E402

_MULTI_DEVICE_TESTS: list[str] = []
_CPU_DEVICES = 8


def on_cpu_devices(test):
    """Run the decorated test in a child process that has 8 simulated CPU devices.

    The first such test to run starts one child for all of them (a fresh JAX costs seconds),
    which runs them with pytest and reports each one's outcome; each test then passes or
    fails with its own outcome and message.
    """
    _MULTI_DEVICE_TESTS.append(test.__name__)

    @functools.wraps(test)
    def run(*args, **kwargs):
        if os.environ.get(_DEVICES_ENV) == str(_CPU_DEVICES):
            return test(*args, **kwargs)
        outcome = _run_in_child()[test.__name__]
        assert outcome == "passed", f"on {_CPU_DEVICES} CPU devices: {outcome}"

    return run


@functools.cache
def _run_in_child() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        ids = [f"{__file__}::{name}" for name in _MULTI_DEVICE_TESTS]
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *ids],
            env=dict(os.environ, **{_DEVICES_ENV: str(_CPU_DEVICES)}),
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if not report.exists():
            failed = f"the child did not run:\n{child.stdout[-3000:]}{child.stderr[-2000:]}"
            return dict.fromkeys(_MULTI_DEVICE_TESTS, failed)
        outcomes = {}
        for case in ElementTree.parse(report).iter("testcase"):
            problem = case.find("failure") if case.find("failure") is not None else case.find("error")
            outcomes[case.get("name")] = "passed" if problem is None else (problem.text or "")[-4000:]
        return outcomes


@functools.cache
def _initial_model(hidden: int, latent: int):
    """Built once per size: an eager initialisation compiles each of its operations."""
    return nnx.split(VAE(hidden=hidden, latent=latent, rngs=nnx.Rngs(0)))


def _state(hidden=64, latent=4, **kw):
    graphdef, params = _initial_model(hidden, latent)
    model = nnx.merge(graphdef, jax.tree.map(jnp.copy, params))  # a copy: the steps donate their state
    return training.create_train_state(model, **kw)


def _max_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _on_mesh(state, images, mesh, layout="replicated"):
    if layout == "fsdp":
        state = sharded_training.gather_weights(state, mesh)
    shardings = sharding.state_shardings(state, mesh, layout)
    batches = sharding.batch_sharding(mesh)
    step = sharded_training.sharded_step(shardings, batches, donate=False)
    return step, sharding.place(state, shardings), sharding.shard_batch(images, batches, len(images))


# ------------------------------------------------------------------ layouts (no devices needed)
def test_fsdp_splits_the_largest_axis_that_the_device_count_divides():
    assert sharding.fsdp_spec((784, 400), 8) == jax.sharding.PartitionSpec("data", None)
    assert sharding.fsdp_spec((400, 20), 8) == jax.sharding.PartitionSpec("data", None)
    assert sharding.fsdp_spec((20, 400), 8) == jax.sharding.PartitionSpec(None, "data")


def test_fsdp_keeps_small_arrays_and_arrays_that_do_not_divide_whole():
    assert sharding.fsdp_spec((400,), 8) == jax.sharding.PartitionSpec()  # under min_size elements
    assert sharding.fsdp_spec((1001, 3), 8) == jax.sharding.PartitionSpec()


def test_state_shardings_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match=r"layout must be one of \('replicated', 'fsdp'\)"):
        sharding.state_shardings(_state(), sharding.make_mesh(1), "zero3")


def test_make_mesh_refuses_more_devices_than_there_are_and_says_how_to_simulate_them():
    with pytest.raises(ValueError, match="jax_num_cpu_devices"):
        sharding.make_mesh(jax.device_count() + 1)


def test_collectives_counts_each_asynchronous_pair_once():
    hlo = (
        "%all-reduce-start.1 = f32[3]{0} all-reduce-start(%p), to_apply=%add\n"
        "%all-reduce-done.1 = f32[3]{0} all-reduce-done(%all-reduce-start.1)\n"
        "%all-gather.2 = f32[8]{0} all-gather(%q), dimensions={0}\n"
        "%t = (f32[], /*index=1*/f32[]) all-reduce(%a, %b), to_apply=%add\n"
    )
    assert sharding.collectives(hlo) == {"all-gather": 1, "all-reduce": 2}


def test_batch_schedule_draws_train_epochs_batches_and_keys(fashion_train):
    key, images = jax.random.key(7), fashion_train[0][:640]
    schedule = sharded_training.batch_schedule(key, len(images), 128)
    k_perm, k_steps = jax.random.split(jax.random.fold_in(key, 1))  # epoch 1 = steps 5..9
    expected = data.batch_indices(k_perm, len(images), 128)
    for j in range(5):
        indices, step_key = schedule(5 + j)
        np.testing.assert_array_equal(indices, expected[j])
        np.testing.assert_array_equal(
            jax.random.key_data(step_key), jax.random.key_data(jax.random.fold_in(k_steps, j))
        )


def test_fit_sharded_rejects_zero_steps(fashion_train):
    mesh = sharding.make_mesh(1)
    with pytest.raises(ValueError, match="steps >= 1"):
        sharded_training.fit_sharded(_state(), fashion_train[0][:256], mesh=mesh, key=jax.random.key(0), steps=0)


# ------------------------------------------------------------------ on 8 simulated devices
@on_cpu_devices
def test_a_replicated_state_is_whole_on_every_device_and_an_fsdp_state_split_eightfold():
    state, mesh = _state(hidden=400, latent=20), sharding.make_mesh(8)
    whole = sharding.bytes_per_device(sharding.place(state, sharding.state_shardings(state, mesh)))
    split = sharding.bytes_per_device(sharding.place(state, sharding.state_shardings(state, mesh, "fsdp")))
    total = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state))
    assert list(whole) == list(range(8)) and set(whole.values()) == {total}
    assert max(split.values()) < total / 7  # 1/8 of the large arrays, plus the small ones whole


@on_cpu_devices
def test_the_sharded_step_equals_the_one_device_step_on_the_same_global_batch(fashion_train):
    images, key = fashion_train[0][:128], jax.random.key(1)
    expected, expected_metrics = training.jit_train_step(_state(), images, key)
    step, state, batch = _on_mesh(_state(), images, sharding.make_mesh(8))
    got, metrics = step(state, batch, key)
    assert float(metrics["loss"]) == pytest.approx(float(expected_metrics["loss"]), rel=1e-6)
    assert _max_diff(got.params, expected.params) <= TOLERANCE
    assert _max_diff(got.opt_state, expected.opt_state) <= TOLERANCE


@on_cpu_devices
def test_the_compiler_inserts_one_all_reduce_for_a_split_batch(fashion_train):
    step, state, batch = _on_mesh(_state(), fashion_train[0][:128], sharding.make_mesh(8))
    hlo = step.lower(state, batch, jax.random.key(0)).compile().as_text()
    assert sharding.collectives(hlo) == {"all-reduce": 1}


@on_cpu_devices
def test_the_fsdp_step_gathers_the_weights_and_equals_the_one_device_step(fashion_train):
    images, key = fashion_train[0][:128], jax.random.key(1)
    expected, _ = training.jit_train_step(_state(hidden=256, latent=8), images, key)
    step, state, batch = _on_mesh(_state(hidden=256, latent=8), images, sharding.make_mesh(8), "fsdp")
    got, _ = step(state, batch, key)
    assert _max_diff(got.params, expected.params) <= TOLERANCE
    hlo = step.lower(state, batch, key).compile().as_text()
    assert sharding.collectives(hlo).get("all-gather", 0) >= 4  # the four large weight matrices


@on_cpu_devices
def test_fit_sharded_trains_what_train_epoch_trains_on_one_device(fashion_train):
    images, key = fashion_train[0][:1280], jax.random.key(3)
    expected, per_step = training.train_epoch(_state(), images, jax.random.fold_in(key, 0))
    for layout in ("replicated", "fsdp"):
        got, losses = sharded_training.fit_sharded(
            _state(), images, mesh=sharding.make_mesh(4), key=key, steps=10, layout=layout
        )
        np.testing.assert_allclose(losses, per_step["loss"], rtol=1e-5)
        assert _max_diff(got.params, expected.params) <= TOLERANCE


def _blockwise_reference_and_sharded_inputs(fashion_train):
    """The one-device reference step on 8 blocks of 128 images, and the same state and batch laid out on 8 devices."""
    images, key, mesh = fashion_train[0][:128], jax.random.key(2), sharding.make_mesh(8)
    start = _state()
    expected, expected_metrics = jax.jit(sharded_training.blockwise_step, static_argnums=3)(start, images, key, 8)
    state = sharding.place(start, sharding.state_shardings(start, mesh))
    batch = sharding.shard_batch(images, sharding.batch_sharding(mesh), 128)
    return mesh, key, expected, expected_metrics, state, batch


@on_cpu_devices
def test_pmean_step_equals_blockwise_step_on_one_device(fashion_train):
    mesh, key, expected, expected_metrics, state, batch = _blockwise_reference_and_sharded_inputs(fashion_train)
    step = sharded_training.pmean_step(mesh)
    assert sharding.collectives(step.lower(state, batch, key).compile().as_text()) == {"all-reduce": 1}
    got, metrics = step(state, batch, key)
    assert float(metrics["loss"]) == pytest.approx(float(expected_metrics["loss"]), rel=1e-6)
    assert _max_diff(got.params, expected.params) <= TOLERANCE


@on_cpu_devices
def test_without_variance_tracking_each_device_takes_its_own_gradient_and_the_step_is_wrong(fashion_train):
    """The trap of notebook 07's exercise 2: the loss still agrees, the parameters do not."""
    mesh, key, expected, expected_metrics, state, batch = _blockwise_reference_and_sharded_inputs(fashion_train)
    got, metrics = sharded_training.pmean_step(mesh, check_vma=False)(state, batch, key)
    assert float(metrics["loss"]) == pytest.approx(float(expected_metrics["loss"]), rel=1e-6)
    assert _max_diff(got.params, expected.params) > 10 * TOLERANCE


@on_cpu_devices
def test_pmean_step_moves_the_parameters_by_the_mean_of_the_per_device_gradients(fashion_train):
    """With SGD the step is params - lr * gradient, so a sum instead of a mean would show (Adam would hide it)."""
    images, key, mesh, lr = fashion_train[0][:128], jax.random.key(4), sharding.make_mesh(4), 0.1
    start = _state(tx=optax.sgd(lr))
    grad = jax.jit(jax.grad(start.loss_fn, has_aux=True), static_argnums=1)
    grads = []
    for d in range(4):  # each device: its 32 rows, the key folded with its index
        x, z_key = training.step_inputs(images[32 * d : 32 * (d + 1)], jax.random.fold_in(key, d), True)
        grads.append(grad(start.params, start.graphdef, x, z_key)[0])
    mean = jax.tree.map(lambda *g: sum(g) / 4, *grads)
    expected = jax.tree.map(lambda p, g: p - lr * g, start.params, mean)
    state = sharding.place(start, sharding.state_shardings(start, mesh))
    got, _ = sharded_training.pmean_step(mesh)(
        state, sharding.shard_batch(images, sharding.batch_sharding(mesh), 128), key
    )
    assert _max_diff(got.params, expected) <= 1e-6


@on_cpu_devices
def test_shard_batch_and_fit_sharded_reject_a_batch_that_does_not_split_evenly(fashion_train):
    mesh = sharding.make_mesh(8)
    with pytest.raises(ValueError, match="multiple of 8"):
        sharding.shard_batch(fashion_train[0][:100], sharding.batch_sharding(mesh), 100)
    with pytest.raises(ValueError, match="multiple of 8"):
        sharded_training.fit_sharded(
            _state(), fashion_train[0][:1000], mesh=mesh, key=jax.random.key(0), steps=1, batch_size=100
        )


@on_cpu_devices
def test_shard_batch_rejects_rows_that_are_not_this_processs_share(fashion_train):
    with pytest.raises(ValueError, match=r"supplies rows 0\.\.127 .* but got 64"):
        sharding.shard_batch(fashion_train[0][:64], sharding.batch_sharding(sharding.make_mesh(8)), 128)


@on_cpu_devices
def test_create_sharded_makes_the_same_state_laid_out_from_the_start():
    mesh = sharding.make_mesh(8)

    def make():
        return training.create_train_state(VAE(hidden=64, latent=4, rngs=nnx.Rngs(0)))

    state = sharding.create_sharded(make, mesh, "fsdp")
    expected = make()
    assert _max_diff(state.params, expected.params) == 0.0
    layout = jax.tree.leaves(sharding.state_shardings(expected, mesh, "fsdp"))
    assert all(x.sharding.is_equivalent_to(s, x.ndim) for x, s in zip(jax.tree.leaves(state), layout, strict=True))


@on_cpu_devices
def test_fsdp_step_reduce_scatters_the_gradients_and_equals_blockwise_step(fashion_train):
    images, key, mesh = fashion_train[0][:128], jax.random.key(5), sharding.make_mesh(8)
    start = _state(hidden=256, latent=8)
    expected, _ = jax.jit(sharded_training.blockwise_step, static_argnums=3)(start, images, key, 8)
    layout = sharding.state_shardings(start, mesh, "fsdp")
    batches = sharding.batch_sharding(mesh)
    batch = sharding.shard_batch(images, batches, 128)
    for remat in (False, True):
        step = sharded_training.fsdp_step(layout, batches, remat=remat)
        lowered = step.lower(sharding.place(start, layout), batch, key)
        found = sharding.collectives(lowered.compile().as_text())
        assert found.get("reduce-scatter", 0) >= 4 and found.get("all-reduce", 0) == 1  # the small arrays
        gathers = lowered.as_text().count("stablehlo.all_gather")  # before XLA's passes
        assert gathers > found["all-gather"] if remat else gathers == found["all-gather"]
        got, _ = step(sharding.place(start, layout), batch, key)
        assert _max_diff(got.params, expected.params) <= TOLERANCE
        for x, s in zip(jax.tree.leaves(got.params), jax.tree.leaves(layout.params), strict=True):
            assert x.sharding.is_equivalent_to(s, x.ndim)


# ------------------------------------------------------------------ gradient accumulation (one device)
def test_accumulated_gradients_equal_the_gradient_of_the_whole_batch_split_the_same_way(fashion_train):
    images, key, start = fashion_train[0][:128], jax.random.key(6), _state()
    got, _ = jax.jit(sharded_training.accumulated_gradients, static_argnums=3)(start, images, key, 4)
    xs, z_keys = sharded_training.micro_batches(images, key, 4)
    grad = jax.grad(sharded_training.blockwise_loss(start.loss_fn), has_aux=True)
    expected, _ = jax.jit(grad, static_argnums=1)(start.params, start.graphdef, xs, z_keys)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert float(jnp.max(jnp.abs(g - e))) <= 1e-5 * float(jnp.max(jnp.abs(e)))


def test_micro_batches_refuse_a_batch_that_does_not_split_evenly(fashion_train):
    with pytest.raises(ValueError, match="does not split into 3 equal blocks"):
        sharded_training.micro_batches(fashion_train[0][:128], jax.random.key(0), 3)
