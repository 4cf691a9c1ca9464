"""benchmarks/train_throughput.py's statistics and benchmarks/profile_step.py's accounting.

On synthetic numbers and events (no timing is asserted: speed lives in benchmarks/), plus one
quick run of each script that checks the shape of what it prints.
"""

import json
from types import SimpleNamespace

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/train_throughput.py")


@pytest.fixture(scope="module")
def prof():
    return load_script("benchmarks/profile_step.py")


# ------------------------------------------------------------------ paired statistics
def test_paired_ratios_divide_each_round_by_the_reference_of_the_same_round(bench):
    assert bench.paired_ratios([110.0, 60.0, 220.0], [100.0, 50.0, 200.0]) == pytest.approx([1.1, 1.2, 1.1])


def test_paired_ratios_need_one_reference_per_round(bench):
    with pytest.raises(ValueError, match="one reference per round"):
        bench.paired_ratios([1.0, 2.0], [1.0])


def test_the_summary_is_the_median_and_the_range_of_the_ratios(bench):
    s = bench.summarize([1.3, 1.05, 1.2, 1.1, 1.4])
    assert (s["gain_median"], s["gain_min"], s["gain_max"]) == (1.2, 1.05, 1.4)
    assert s["effect"] == "faster"


@pytest.mark.parametrize(
    "ratios, called",
    [
        ([1.01, 1.02, 1.5], "faster"),
        ([0.7, 0.99, 0.95], "slower"),
        ([0.98, 1.3, 1.4], "no effect shown"),  # median 1.3, but one round says otherwise
        ([1.0, 1.2, 1.2], "no effect shown"),  # a ratio of exactly 1 is not a gain
        ([0.8, 1.0], "no effect shown"),
    ],
)
def test_an_effect_is_called_only_when_the_whole_range_is_on_one_side_of_1(bench, ratios, called):
    assert bench.summarize(ratios)["effect"] == called


def test_row_lines_pair_each_round_with_the_reference_of_the_same_round(bench, monkeypatch):
    # The load changes from round to round; the row is 5 % faster than its reference in each.
    monkeypatch.setattr(bench, "ROWS", [("ref", None, "first"), ("row", "ref", "one change")])
    ref, row = [400.0, 100.0, 200.0, 300.0], [420.0, 105.0, 210.0, 315.0]
    runners = {"ref": SimpleNamespace(rounds=ref), "row": SimpleNamespace(rounds=row)}
    first, second = bench.row_lines(runners)
    assert first["ratios"] is None and first["effect"] is None
    assert second["ratios"] == pytest.approx([1.05] * 4)
    assert (second["gain_min"], second["gain_max"], second["effect"]) == (1.05, 1.05, "faster")
    assert second["rounds"] == [420, 105, 210, 315] and second["images_per_s"] == 262
    # Medians 340 over 250 would say 1.36x; paired, one round is faster and one slower.
    runners = {"ref": SimpleNamespace(rounds=[100.0, 400.0]), "row": SimpleNamespace(rounds=[300.0, 380.0])}
    second = bench.row_lines(runners)[1]
    assert second["ratios"] == pytest.approx([3.0, 0.95]) and second["effect"] == "no effect shown"


def test_each_round_has_its_own_order_of_the_rows_and_the_same_one_every_run(bench):
    orders = [bench.round_order(15, r) for r in range(15)]
    assert all(sorted(o) == list(range(15)) for o in orders)
    assert len({tuple(o) for o in orders}) == 15
    assert orders == [bench.round_order(15, r) for r in range(15)]


# ------------------------------------------------------------------ the machine's load
@pytest.mark.parametrize(
    "load, cpus, busy", [(0.59, 2, False), (0.6, 2, False), (0.61, 2, True), (1.3, 2, True), (2.0, 8, False)]
)
def test_busy_means_a_1_minute_load_above_0_3_per_cpu(bench, load, cpus, busy):
    assert bench.is_busy(load, cpus) is busy


def test_a_busy_machine_is_refused_without_allow_busy(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.5, 1.0, 0.5))
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    assert bench.main(["--quick"]) == 3
    err = capsys.readouterr().err
    assert "busy" in err and "--allow-busy" in err and "1.50" in err


def test_a_quick_run_on_a_busy_machine_prints_rows_with_paired_ratios_and_is_marked(bench, monkeypatch, capsys):
    # Two rows (each compiles once), two rounds of a few steps: checks the output, not the speed.
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.5, 1.0, 0.5))
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    rows = [("jax_jit", None, "compiled"), ("vae_lib", "jax_jit", "the library")]
    monkeypatch.setattr(bench, "ROWS", rows)
    monkeypatch.setattr(bench, "FASTER_ROWS", [])
    assert bench.main(["--quick", "--allow-busy"]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    by_name = {d["variant"]: d for d in lines if "variant" in d}
    assert list(by_name) == ["jax_jit", "vae_lib"]
    for name, vs, _ in rows[1:]:
        d = by_name[name]
        assert len(d["rounds"]) == len(d["ratios"]) == bench.QUICK["rounds"]
        assert d["ratios"] == pytest.approx(
            [a / b for a, b in zip(d["rounds"], by_name[vs]["rounds"], strict=True)], rel=1e-3
        )
        assert d["gain_min"] <= d["gain_median"] <= d["gain_max"]
        assert d["effect"] == bench.effect(d["gain_min"], d["gain_max"])
    summary = lines[-1]
    assert summary["busy"] is True and summary["load_avg_before"] == [1.5, 1.0, 0.5] and summary["cpus"] == 2
    assert summary["rounds"] == 2 and len(summary["round_orders"]) == 2
    assert 0 < summary["vae_lib_fraction_of_ceiling"] and "vae_lib_over_eager" not in summary
    assert "warning" in out.err


# ------------------------------------------------------------------ the faster-step candidates
def _leaves(runner):
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(runner.params_state())]


def test_each_faster_step_candidate_changes_one_thing_on_the_library_row(bench):
    from vae_lib import data

    images = data.load_fashion_mnist("train")[0][:1280]
    runners = {name: bench.Runner(name, images) for name in ["vae_lib"] + [n for n, _, _ in bench.FASTER_ROWS]}
    for r in runners.values():
        r.run(steps=4)
    ref = _leaves(runners["vae_lib"])

    def largest_difference(name):
        return max(float(abs(a - b).max()) for a, b in zip(_leaves(runners[name]), ref, strict=True))

    assert all(vs == "vae_lib" for _, vs, _ in bench.FASTER_ROWS)
    assert largest_difference("flat_adam") < 1e-5  # the same update, rounded differently
    assert largest_difference("rbg_keys") > 1e-4  # other random numbers: another training
    assert int(runners["batch_256"].state.step) == 2 and int(runners["vae_lib"].state.step) == 4


def test_the_torch_row_needs_torch_and_says_how_to_install_it(bench, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(SystemExit, match=r"pip install torch==2\.13\.0"):
        bench.Runner("torch_compile", __import__("numpy").zeros((256, 28, 28), "uint8"))


# ------------------------------------------------------------------ the profile's accounting
def _ev(prof, thread, start, duration, name, op=None, flow=None):
    return prof.Event(thread, start, duration, name, op, flow)


def test_a_worker_pool_piece_counts_on_its_thread_and_for_the_operation_that_scheduled_it(prof):
    e = lambda *a, **k: _ev(prof, *a, **k)  # noqa: E731
    events = [
        e("A", 0, 1000, "ThunkExecutor::Execute"),
        e("A", 100, 600, "dot.1", op="dot.1"),
        e("A", 110, 0, "ThreadpoolListener::Record", flow=7),
        e("A", 700, 200, "fusion.2", op="fusion.2"),
        e("B", 200, 0, "ThreadpoolListener::StartRegion", flow=7),
        e("B", 600, 0, "ThreadpoolListener::StopRegion"),
        e("B", 650, 300, "ThunkExecutor::Execute (wait for completion)"),
    ]
    acc = prof.account(events)
    assert acc.busy == {"A": 1000, "B": 400}  # B's wait is not busy
    assert acc.core["dot.1"] == 600 + 400 and acc.core["fusion.2"] == 200
    assert acc.core["runtime"] == 1000 - 600 - 200
    dot = [x for x in acc.executions if x["op"] == "dot.1"]
    assert len(dot) == 1 and dot[0]["threads"] == {"A", "B"} and dot[0]["wall"] == 600 and dot[0]["core"] == 1000
    assert acc.regions == 1 and acc.unlinked_regions == 0 and acc.wall == 1000


def test_a_piece_the_executor_scheduled_is_runtime_less_the_operations_run_inside_it(prof):
    e = lambda *a, **k: _ev(prof, *a, **k)  # noqa: E731
    events = [
        e("A", 0, 500, "ThunkExecutor::Execute"),
        e("A", 10, 0, "ThreadpoolListener::Record", flow=3),  # outside any operation
        e("B", 20, 0, "ThreadpoolListener::StartRegion", flow=3),
        e("B", 50, 300, "copy.4", op="copy.4"),
        e("B", 420, 0, "ThreadpoolListener::StopRegion"),
        e("B", 430, 0, "ThreadpoolListener::StartRegion", flow=99),  # its Record is not in the trace
        e("B", 480, 0, "ThreadpoolListener::StopRegion"),
    ]
    acc = prof.account(events)
    assert acc.busy["B"] == 400 + 50
    assert acc.core["copy.4"] == 300
    assert acc.core["runtime"] == 500 + 100 + 50
    assert (acc.regions, acc.unlinked_regions) == (2, 1)


HLO = """
%fused_computation.13 (param_0.13: f32[128,784], param_1.13: f32[784,400]) -> f32[128,400] {
  %param_0.13 = f32[128,784]{1,0} parameter(0)
  %param_1.13 = f32[784,400]{1,0} parameter(1)
  ROOT %dot_general.76 = f32[128,400]{1,0} dot(%param_0.13, %param_1.13), lhs_contracting_dims={1}, \
rhs_contracting_dims={0}
}

ENTRY %main (p0: f32[128,784], p1: f32[784,400], g: f32[128,784]) -> f32[400,784] {
  %p0 = f32[128,784]{1,0} parameter(0)
  %p1 = f32[784,400]{1,0} parameter(1)
  %g = f32[128,784]{1,0} parameter(2)
  %ynn_fusion.13 = f32[128,400]{1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation.13
  ROOT %dot.31 = f32[400,784]{1,0} dot(%ynn_fusion.13, %g), lhs_contracting_dims={0}, rhs_contracting_dims={0}
}
"""


def test_the_flops_of_a_product_come_from_the_hlo_whether_fused_or_not(prof):
    instr, comps = prof.instructions(HLO), prof.computations(HLO)
    fused, plain = prof.dot_of("ynn_fusion.13", instr, comps), prof.dot_of("dot.31", instr, comps)
    assert prof.dot_flops(fused, instr) == 2 * 128 * 784 * 400
    assert prof.dot_flops(plain, instr) == 2 * 400 * 784 * 128
    assert prof.dot_of("p0", instr, comps) is None
    assert prof.kind_of("ynn_fusion.13", instr["ynn_fusion.13"], comps, instr) == "matrix products"


def test_a_quick_profile_accounts_every_thread_and_lists_the_products(prof, capsys):
    prof.main(["--quick"])
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    kinds, last = lines[:-1], lines[-1]
    assert {k["kind"] for k in kinds} >= {"matrix products", "loop and runtime"}
    assert sum(k["share"] for k in kinds) == pytest.approx(1, abs=0.01)
    assert sum(last["busy_ms_per_step_by_thread"].values()) == pytest.approx(last["core_ms_per_step"], rel=0.02)
    assert last["worker_regions"] > 0  # this jaxlib's trace has the worker pool's pieces
    products = last["products"]
    assert round(sum(p["per_step"] for p in products)) == 14  # the step's 14 products
    assert all(1 <= p["threads"] <= last["usable_cpus"] and set(p["alone_gflops"]) >= {"1"} for p in products)
    assert "CHECK FAILED" in out or last["check_busy_within_wall_x_cpus"]
