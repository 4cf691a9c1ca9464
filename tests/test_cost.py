"""vae_lib.cost: the FLOPs of a step are those of the compiled step; the stored benchmark results are complete."""

import math

import jax
import jax.extend
import jax.numpy as jnp
import pytest
from flax import nnx
from helpers import REPO, load_script

from vae_lib import training
from vae_lib.cost import (
    break_even_images,
    data_parallel_step_seconds,
    read_throughput,
    ring_allreduce_seconds,
    step_matmul_flops,
    step_matmul_shapes,
)
from vae_lib.models import VAE


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


@pytest.mark.parametrize("cores", ["2cores", "1core"])
def test_the_stored_benchmark_results_have_every_row_of_the_benchmark(cores):
    results = REPO / "benchmarks" / "results"
    rows, info = read_throughput(results / f"train_throughput_{cores}.jsonl")
    bench = load_script("benchmarks/train_throughput.py")
    optional = [bench.TORCH_ROW] if bench.TORCH_ROW[0] in rows else []  # run when torch is installed
    expected = bench.ROWS + bench.FASTER_ROWS + optional
    assert [(n, r["vs"], r["change"]) for n, r in rows.items()] == expected, "re-run `make bench`"
    assert all(len(r["rounds"]) == bench.ROUNDS for r in rows.values())
    assert not info["busy"] and not info["quick"], "the stored results come from a full run on a quiet machine"
    for r in rows.values():  # each gain is the median and range of the paired per-round ratios
        if r["vs"] is not None:
            ratios = [a / b for a, b in zip(r["rounds"], rows[r["vs"]]["rounds"], strict=True)]
            assert r["gain_min"] == pytest.approx(min(ratios), rel=1e-3)
            assert r["gain_median"] == pytest.approx(sorted(ratios)[len(ratios) // 2], rel=1e-3)
            assert r["effect"] == bench.effect(r["gain_min"], r["gain_max"])
    assert info["ceiling_images_per_s"] == pytest.approx(info["matmul_gflops"] * 1e9 / step_matmul_flops(), rel=1e-3)


def test_reading_a_file_without_benchmark_rows_says_how_to_make_one(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"matmul_gflops": 1.0}\n')
    with pytest.raises(ValueError, match="make bench"):
        read_throughput(tmp_path / "x.jsonl")


# ------------------------------------------------------------------ the data-parallel model on paper
def test_the_ring_all_reduce_is_2_n_minus_1_rounds_of_latency_plus_the_bandwidth_term():
    # 8 devices, 1 MB, 1 GB/s, 3 microseconds: 14 rounds of 3 us, 2 * 7/8 * 1 ms
    assert ring_allreduce_seconds(1e6, 8, 1e9, 3e-6) == pytest.approx(14 * 3e-6 + 1.75e-3)
    assert ring_allreduce_seconds(1e6, 8, 1e9) == pytest.approx(1.75e-3)
    assert ring_allreduce_seconds(1e6, 1, 1e9, 3e-6) == 0.0  # one device sends nothing


def test_the_latency_term_of_the_notebooks_vae_over_nvlink_is_about_four_times_the_bandwidth_term():
    grad_bytes = 4 * 652_824
    bandwidth_only = ring_allreduce_seconds(grad_bytes, 8, 450e9)
    with_latency = ring_allreduce_seconds(grad_bytes, 8, 450e9, 3e-6)
    assert bandwidth_only == pytest.approx(10.2e-6, rel=1e-2)
    assert (with_latency - bandwidth_only) / bandwidth_only == pytest.approx(4.1, rel=1e-2)


def test_a_step_adds_overhead_compute_and_all_reduce_and_the_break_even_balances_the_last_two():
    args = dict(flops_per_image=3.28e6, rate=67e12, grad_bytes=4 * 652_824, devices=8, bandwidth=450e9)
    b = break_even_images(**args, latency=3e-6)
    comm = ring_allreduce_seconds(4 * 652_824, 8, 450e9, 3e-6)
    assert b * 3.28e6 / 67e12 == pytest.approx(comm)
    assert data_parallel_step_seconds(b, **args, latency=3e-6, overhead=2e-5) == pytest.approx(2e-5 + 2 * comm)
    assert break_even_images(**args, latency=3e-6) > break_even_images(**args)  # latency raises it


def test_the_ring_all_reduce_refuses_no_devices_or_no_bandwidth():
    with pytest.raises(ValueError, match="devices >= 1"):
        ring_allreduce_seconds(1e6, 0, 1e9)
    with pytest.raises(ValueError, match="bandwidth > 0"):
        ring_allreduce_seconds(1e6, 8, 0)
