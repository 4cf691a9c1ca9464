"""Where the time of one library training step goes, thread by thread: a jax.profiler trace.

    python benchmarks/profile_step.py            (about 30 s)
    python benchmarks/profile_step.py --quick    (a few steps, for the tests)

Runs ``vae_lib.training.train_epoch_fused`` (the 784-400-20 VAE, batch 128, real
Fashion-MNIST) for a warm-up, times ``STEPS`` steps without the profiler (the wall time per
step), then traces the same number of steps with ``jax.profiler.trace``.

How the trace is read. XLA's CPU runtime records one event per operation it runs (a matrix
product, a fused loop of element-wise work, a copy) on the thread that launched it. An
operation that splits its work over XLA's worker pool (Eigen's and YNNPACK's products, the
loops with ``outer_dimension_partitions``) hands pieces to other threads; each piece shows up
on the thread that ran it only as a ``ThreadpoolListener::StartRegion`` .. ``StopRegion`` pair
(markers without a duration), linked by a flow id to the ``ThreadpoolListener::Record`` on the
launching thread. So, on every XLA thread:

* each instant is given to the innermost interval open on that thread (an operation, a
  worker-pool piece, the thunk executor), so nothing is counted twice on one thread;
* a worker-pool piece belongs to the operation that was running where it was scheduled (the
  innermost operation around its ``Record``); a piece scheduled by the executor itself (a
  task that runs further operations) counts as runtime, except for the operations inside it;
* "(wait for completion)" and ``SlinkyThreadPool::Await`` are a thread waiting: not busy.

An operation's core time is then its own time on the launching thread plus its pieces on the
others. The busy time of every thread is printed, and their sum is checked against the traced
wall time times the CPUs this process may use: more than that means the event durations
include time the threads spent preempted (a busy machine), and the check says so. The
Python thread is not counted (it only waits for the epoch).

Each operation is matched by name with the compiled program (``.compile().as_text()``) and
put in one kind (see ``kind_of``): matrix products, random numbers, Adam update, loss and
layers, loop and runtime. Every matrix product gets a line: its output shape, the FLOPs of
one execution (from the HLO's operand shapes and contracting dimensions), the number of
threads one execution ran on (median over executions), the wall time of one execution
(median) and the rate it delivered, GFLOP/s over wall time and per core-second.

Then, as a cross-check that needs no trace, every distinct product shape is timed alone
(``jax.jit`` of one ``jnp.dot``) in a subprocess allowed one CPU and in one allowed two (or
all this process may use), each reported in GFLOP/s. If the trace holds no worker-pool
regions (another jaxlib), the output says so and these two columns are the measurement.

Output: the tables, then one JSON line ``{"kind", "core_ms_per_step", "share"}`` per kind and a
last JSON line ``{"wall_ms_per_step", "core_ms_per_step", ...}`` that adds the per-thread
busy time, the check, the products and their alone rates, and the machine's load.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

BATCH = 128
STEPS = 96
QUICK_STEPS = 8
PARAM_SHAPES = {"400,784", "784,400", "400,20", "20,400", "400", "20", "784"}
WAITS = ("ThunkExecutor::Execute (wait for completion)", "SlinkyThreadPool::Await")
MARKERS = ("ThreadpoolListener::Record", "ThreadpoolListener::StartRegion", "ThreadpoolListener::StopRegion")


# ------------------------------------------------------------------ the compiled program
def instructions(hlo: str) -> dict[str, dict]:
    """Every instruction of an HLO module's text: shape, opcode, operand names, attributes."""
    out = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$", hlo, re.M):
        rest = m.group(4)
        depth, end = 1, len(rest)
        for j, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = j
                break
        op = re.search(r'op_name="([^"]+)"', rest)
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        out[m.group(1)] = {
            "shape": m.group(2),
            "opcode": m.group(3),
            "op_name": op.group(1) if op else "",
            "operands": re.findall(r"%([\w.\-]+)", rest[:end]),
            "attrs": rest[end:],
            "calls": calls.group(1) if calls else None,
        }
    return out


def computations(hlo: str) -> dict[str, list[str]]:
    """The instruction names of each computation of an HLO module's text."""
    out, current = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
        if head and line.rstrip().endswith("{"):
            current = out.setdefault(head.group(1), [])
        elif current is not None and (m := re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)):
            current.append(m.group(1))
    return out


def _dims(shape: str) -> list[int]:
    inside = shape[shape.find("[") + 1 : shape.find("]")]
    return [int(d) for d in inside.split(",") if d]


def dot_of(name: str, instr: dict, comps: dict) -> dict | None:
    """The dot an operation runs (itself, or the one inside the fusion it calls), or None."""
    ins = instr.get(name)
    if ins is None:
        return None
    if ins["opcode"] == "dot":
        return ins
    if ins["opcode"] == "fusion" and ins["calls"]:
        dots = [instr[n] for n in comps.get(ins["calls"], []) if instr.get(n, {}).get("opcode") == "dot"]
        return dots[0] if len(dots) == 1 else None
    return None


def dot_flops(dot: dict, instr: dict) -> int:
    """2 x (output elements) x (contracted size) of one HLO dot."""
    lhs = _dims(instr[dot["operands"][0]]["shape"])
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", dot["attrs"])
    k = 1
    for d in contracting.group(1).split(",") if contracting and contracting.group(1) else ():
        k *= lhs[int(d)]
    out = 1
    for d in _dims(dot["shape"]):
        out *= d
    return 2 * out * k


def kind_of(name: str, instr: dict, comps: dict | None = None, all_instr: dict | None = None) -> str:
    """The kind of work of one operation, from its compiled instruction (or its name)."""
    if name == "runtime" or name.startswith(("ThunkExecutor", "SlinkyThreadPool", "while", "sort", "call")):
        return "loop and runtime"
    if not instr:
        return "loop and runtime"
    op, shape, opcode = instr["op_name"], instr["shape"], instr["opcode"]
    if opcode == "dot" or (all_instr is not None and dot_of(name, all_instr, comps or {}) is not None):
        return "matrix products"
    if name.startswith("ynn_fusion") and op.endswith("dot_general"):
        return "matrix products"
    if shape.startswith("u32") or re.search(r"bernoulli|uniform|_normal|threefry|random", op):
        return "random numbers"
    dims = shape[shape.find("[") + 1 : shape.find("]")]
    if dims in PARAM_SHAPES and "jvp" not in op and opcode in ("fusion", "copy"):
        return "Adam update"
    return "loss and layers"


# ------------------------------------------------------------------ per-thread accounting
class Event(NamedTuple):
    """One trace event on one thread (times in ns). ``flow`` links Record and StartRegion."""

    thread: str
    start: int
    duration: int
    name: str
    op: str | None = None  # the HLO operation, for an operation's event
    flow: int | None = None


class Accounting:
    """What :func:`account` finds: busy ns per thread, core ns per label, the executions."""

    def __init__(self):
        self.busy: dict[str, int] = {}  # thread -> ns busy
        self.core = collections.Counter()  # op name or "runtime" -> ns
        self.executions: list[dict] = []  # one per operation event: op, wall, core, threads
        self.regions = 0  # worker-pool pieces found
        self.unlinked_regions = 0  # pieces whose Record was not found
        self.wall = 0  # first event's start to last event's end, ns


def account(events: list[Event]) -> Accounting:
    """Per-thread busy time, worker-pool pieces included, given to the operations that made them."""
    acc = Accounting()
    if not events:
        return acc
    acc.wall = max(e.start + e.duration for e in events) - min(e.start for e in events)
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e.thread].append(e)

    # Intervals per thread: operations, executor and end-of-thunk work, waits, worker-pool pieces.
    intervals = {}
    records = {}  # flow id -> (thread, time)
    for thread, evs in by_thread.items():
        evs.sort(key=lambda e: (e.start, -e.duration))
        iv, open_region = [], None
        for e in evs:
            if e.name == "ThreadpoolListener::Record" and e.flow is not None:
                records[e.flow] = (thread, e.start)
            elif e.name == "ThreadpoolListener::StartRegion":
                open_region = e
            elif e.name == "ThreadpoolListener::StopRegion":
                if open_region is not None and e.start > open_region.start:
                    iv.append([open_region.start, e.start, "region", open_region.flow])
                open_region = None
            elif e.duration > 0:
                kind = "op" if e.op else ("wait" if e.name in WAITS else "runtime")
                iv.append([e.start, e.start + e.duration, kind, e.op or e.name])
        iv.sort(key=lambda x: (x[0], -x[1]))
        intervals[thread] = iv

    # The innermost operation open at a time on a thread (for a piece's Record).
    def op_at(thread: str, t: int):
        best = None
        for k, (s, end, kind, _) in enumerate(intervals[thread]):
            if s > t:
                break
            if kind == "op" and s <= t < end:
                best = k
        return best

    owner = {}  # (thread, interval index) of a region -> (thread, interval index) of its operation
    for thread, iv in intervals.items():
        for k, (_, _, kind, flow) in enumerate(iv):
            if kind != "region":
                continue
            acc.regions += 1
            rec = records.get(flow)
            if rec is None:
                acc.unlinked_regions += 1
                continue
            j = op_at(*rec)
            if j is not None:
                owner[(thread, k)] = (rec[0], j)

    # Own time: each instant to the innermost open interval of its thread.
    execution = {}  # (thread, index) of an operation event -> its record in acc.executions
    pieces = []  # (thread, own ns, operation's key) of each linked worker-pool piece
    for thread, iv in intervals.items():
        own = [end - s for s, end, _, _ in iv]
        stack: list[int] = []
        for k, (s, end, _, _) in enumerate(iv):
            while stack and iv[stack[-1]][1] <= s:
                stack.pop()
            if stack:
                parent = stack[-1]
                own[parent] -= min(end, iv[parent][1]) - s
            stack.append(k)
        busy = 0
        for k, (s, end, kind, label) in enumerate(iv):
            if kind == "wait":
                continue
            busy += own[k]
            if kind == "op":
                rec = {"op": label, "thread": thread, "wall": end - s, "core": own[k], "threads": {thread}}
                execution[(thread, k)] = rec
                acc.executions.append(rec)
                acc.core[label] += own[k]
            elif kind == "region" and (thread, k) in owner:
                pieces.append((thread, own[k], owner[(thread, k)]))  # given to its operation below
            else:
                acc.core["runtime"] += own[k]
        acc.busy[thread] = busy
    for thread, ns, op_key in pieces:
        rec = execution[op_key]
        rec["core"] += ns
        rec["threads"].add(thread)
        acc.core[rec["op"]] += ns
    return acc


def events_of(trace) -> list[Event]:
    """The events of XLA's threads (not Python's) in a ``jax.profiler.ProfileData``."""
    out = []
    for plane in trace.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for e in line.events:
                stats = dict(e.stats)
                flow = stats.get("_p", stats.get("_c")) if e.name in MARKERS else None
                out.append(Event(line.name, e.start_ns, e.duration_ns, e.name, stats.get("hlo_op"), flow))
    return out


# ------------------------------------------------------------------ each product alone
def alone_rates(shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], seconds: float) -> dict[str, float]:
    """GFLOP/s of ``jax.jit(jnp.dot)`` on each pair of operand shapes, best of 5 repeats, here."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    out = {}
    for a_shape, b_shape in shapes:
        rng = np.random.default_rng(0)
        a = jnp.asarray(rng.standard_normal(a_shape, dtype=np.float32))
        b = jnp.asarray(rng.standard_normal(b_shape, dtype=np.float32))
        f = jax.jit(jnp.dot)
        f(a, b).block_until_ready()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 6:
            f(a, b).block_until_ready()
            reps += 1
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(reps):
                r = f(a, b)
            r.block_until_ready()
            best = min(best, (time.perf_counter() - t) / reps)
        out[f"{list(a_shape)}x{list(b_shape)}"] = 2 * a_shape[0] * a_shape[1] * b_shape[1] / best / 1e9
    return out


def alone_rates_on(cpus: set[int], shapes, seconds: float) -> dict[str, float]:
    """:func:`alone_rates` in a fresh Python allowed only ``cpus`` (its XLA sizes its pool to them)."""
    code = (
        "import json, os, sys; os.sched_setaffinity(0, set(json.loads(sys.argv[1])));"
        "sys.path.insert(0, sys.argv[4]); import profile_step as p;"
        "print(json.dumps(p.alone_rates([tuple(map(tuple, s)) for s in json.loads(sys.argv[2])], float(sys.argv[3]))))"
    )
    args = [json.dumps(sorted(cpus)), json.dumps(shapes), str(seconds), os.path.dirname(os.path.abspath(__file__))]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the run
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps and short timings (tests)")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vae_lib import data, models, training

    steps = QUICK_STEPS if args.quick else STEPS
    load_before = os.getloadavg()
    usable = sorted(os.sched_getaffinity(0))
    images, _ = data.load_fashion_mnist("train")
    images = jnp.asarray(images[: BATCH * steps])
    state = training.create_train_state(models.VAE(rngs=nnx.Rngs(0)))
    for seed in range(2):  # compile, warm up
        state, _ = training.train_epoch_fused(state, images, jax.random.key(seed))
    jax.block_until_ready(state.params)
    t0 = time.perf_counter()
    state, _ = training.train_epoch_fused(state, images, jax.random.key(2))
    jax.block_until_ready(state.params)
    wall_ms = 1e3 * (time.perf_counter() - t0) / steps

    folder = tempfile.mkdtemp(prefix="vae_lib_profile_")
    with jax.profiler.trace(folder):
        state, _ = training.train_epoch_fused(state, images, jax.random.key(3))
        jax.block_until_ready(state.params)
    trace = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    acc = account(events_of(trace))

    hlo = training.lower_epoch(state, images, jax.random.key(0), BATCH).compile().as_text()
    instr, comps = instructions(hlo), computations(hlo)
    per_step = 1e6 * steps  # ns -> ms per step

    # Per thread, and the check against the wall time.
    traced_wall_ms = acc.wall / per_step
    total_busy = sum(acc.busy.values())
    capacity = acc.wall * len(usable)
    print(f"threads (XLA's; traced wall time {traced_wall_ms:.3f} ms per step, {len(usable)} usable CPUs)")
    for thread, ns in sorted(acc.busy.items(), key=lambda kv: -kv[1]):
        print(f"    {thread[:40]:40s} {ns / per_step:8.3f} ms/step busy  {ns / max(acc.wall, 1):6.1%} of the time")
    print(
        f"    {'all threads':40s} {total_busy / per_step:8.3f} ms/step busy  {total_busy / max(capacity, 1):6.1%} "
        f"of wall x {len(usable)} CPUs"
    )
    check_ok = total_busy <= 1.02 * capacity
    if not check_ok:
        print(
            "CHECK FAILED: the threads were busy longer than the CPUs allow: event durations include time "
            "spent preempted (the machine is loaded, or more threads than CPUs); shares are unreliable."
        )
    if acc.regions == 0:
        print(
            "NOTE: this trace holds no worker-pool regions (ThreadpoolListener::StartRegion), so work that "
            "XLA's operations hand to other threads is not in it; the per-product rates below are "
            "measured alone, with 1 and 2 CPUs, instead."
        )
    elif acc.unlinked_regions:
        print(f"NOTE: {acc.unlinked_regions} of {acc.regions} worker-pool regions had no Record: counted as runtime.")

    # By kind.
    kinds = collections.Counter()
    for label, ns in acc.core.items():
        kinds[kind_of(label, instr.get(label, {}), comps, instr)] += ns
    total = sum(kinds.values())
    print(f"\n{'kind of work':28s} {'core-ms/step':>12s} {'share':>6s}")
    for kind, ns in kinds.most_common():
        print(f"{kind:28s} {ns / per_step:12.3f} {ns / total:6.1%}")

    # The matrix products, one line per operation.
    products = []
    by_op = collections.defaultdict(list)
    for rec in acc.executions:
        by_op[rec["op"]].append(rec)
    for op, recs in by_op.items():
        dot = dot_of(op, instr, comps)
        if dot is None:
            continue
        flops = dot_flops(dot, instr)
        lhs, rhs = (_dims(instr[o]["shape"]) for o in dot["operands"][:2])
        wall = statistics.median(r["wall"] for r in recs)
        core = sum(r["core"] for r in recs)
        products.append(
            {
                "op": op,
                "output": _dims(dot["shape"]),
                "operands": [lhs, rhs],
                "flops": flops,
                "per_step": round(len(recs) / steps, 2),
                "threads": statistics.median(len(r["threads"]) for r in recs),
                "wall_us": round(wall / 1e3, 2),
                "core_ms_per_step": round(core / per_step, 3),
                "gflops": round(flops / wall, 1),
                "gflops_per_core": round(flops * len(recs) / core, 1),
            }
        )
    products.sort(key=lambda p: -p["core_ms_per_step"])

    shapes = []
    for p in products:
        a, b = p["operands"]
        m = re.search(
            r"lhs_contracting_dims=\{(\d)\}.*rhs_contracting_dims=\{(\d)\}", dot_of(p["op"], instr, comps)["attrs"]
        )
        lc, rc = (int(m.group(1)), int(m.group(2))) if m else (1, 0)
        pair = ([a[1 - lc], a[lc]], [b[rc], b[1 - rc]])  # as (m, k) x (k, n)
        p["as_mk_kn"] = pair
        if pair not in shapes:
            shapes.append(pair)
    seconds = 0.1 if args.quick else 0.6
    alone = {1: alone_rates_on(set(usable[:1]), shapes, seconds)}
    if len(usable) > 1:
        alone[2] = alone_rates_on(set(usable[:2]), shapes, seconds)
    for p in products:
        key = f"{p['as_mk_kn'][0]}x{p['as_mk_kn'][1]}"
        p["alone_gflops"] = {str(n): round(r[key], 1) for n, r in alone.items()}

    print(
        f"\n{'matrix product':22s} {'(m,k)x(k,n)':>18s} {'/step':>5s} {'threads':>7s} {'us':>7s} {'core-ms':>8s} "
        f"{'GFLOP/s':>8s} {'per core':>8s} {'alone 1 CPU':>11s} {'alone 2':>8s}"
    )
    for p in products:
        (m_, k_), (_, n_) = p["as_mk_kn"]
        print(
            f"{p['op']:22s} {f'{m_}x{k_}x{n_}':>18s} {p['per_step']:5.0f} {p['threads']:7.1f} {p['wall_us']:7.1f} "
            f"{p['core_ms_per_step']:8.3f} {p['gflops']:8.1f} {p['gflops_per_core']:8.1f} "
            f"{p['alone_gflops']['1']:11.1f} {p['alone_gflops'].get('2', float('nan')):8.1f}"
        )
    print(
        "(threads: median over executions of the threads one execution ran on; us: its median wall time; "
        "GFLOP/s: over that wall time; per core: over its core time; alone: jax.jit(jnp.dot) of that shape "
        "by itself in a process allowed 1 or 2 CPUs)"
    )

    for kind, ns in kinds.most_common():
        print(json.dumps({"kind": kind, "core_ms_per_step": round(ns / per_step, 3), "share": round(ns / total, 3)}))
    print(
        json.dumps(
            {
                "wall_ms_per_step": round(wall_ms, 3),
                "core_ms_per_step": round(total / per_step, 3),
                "traced_wall_ms_per_step": round(traced_wall_ms, 3),
                "busy_ms_per_step_by_thread": {t: round(ns / per_step, 3) for t, ns in acc.busy.items()},
                "usable_cpus": len(usable),
                "busy_fraction_of_wall_x_cpus": round(total_busy / max(capacity, 1), 3),
                "check_busy_within_wall_x_cpus": check_ok,
                "worker_regions": acc.regions,
                "unlinked_worker_regions": acc.unlinked_regions,
                "products": products,
                "steps": steps,
                "load_avg_before": [round(x, 2) for x in load_before],
                "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
