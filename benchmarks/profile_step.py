"""Where the time of one library training step goes: a jax.profiler trace, summed by kind of work.

    python benchmarks/profile_step.py          (about 20 s)

Runs ``vae_lib.training.train_epoch_fused`` (the 784-400-20 VAE, batch 128, real
Fashion-MNIST) for a warm-up, then traces ``STEPS`` steps with ``jax.profiler.trace``. XLA's
CPU runtime records one event per operation it runs (a matrix product, a fused loop of
element-wise work, a copy), on whichever thread ran it. Each event's own time (its duration
less that of the events nested in it) is matched by name with the compiled program's
instructions (``.compile().as_text()``) and put in one of these kinds:

  matrix products   the 14 dots of the forward and backward pass, one line per shape
  random numbers    the threefry bits for binarizing the batch and for z (and their copies)
  Adam update       element-wise work whose result has the shape of a parameter
  loss and layers   the rest of the step: softplus of the Bernoulli likelihood, the KL, ReLU,
                    bias gradients, the batch gather
  loop and runtime  the loop itself, thread hand-offs, the batch order (outside the loop)

Times are core-milliseconds per step (summed over the threads that ran the work, so on two
cores they add up to about twice the wall time). Prints a table and one JSON line
``{"kind": ..., "core_ms_per_step": ..., "share": ...}`` per kind, then the wall time per step.
"""

from __future__ import annotations

import collections
import glob
import json
import re
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

from vae_lib import data, models, training

BATCH = 128
STEPS = 96
PARAM_SHAPES = {"400,784", "784,400", "400,20", "20,400", "400", "20", "784"}


def kind_of(name: str, instr: dict) -> str:
    """The kind of work of one runtime event, from its compiled instruction (or its name)."""
    if name.startswith(("ThunkExecutor", "SlinkyThreadPool", "while", "sort", "call")) or not instr:
        return "loop and runtime"
    op, shape, opcode = instr["op_name"], instr["shape"], instr["opcode"]
    if opcode == "dot" or (name.startswith("ynn_fusion") and op.endswith("dot_general")):
        return "matrix products"
    if shape.startswith("u32") or re.search(r"bernoulli|uniform|_normal|threefry|random", op):
        return "random numbers"
    dims = shape[shape.find("[") + 1 : shape.find("]")]
    if dims in PARAM_SHAPES and "jvp" not in op and opcode in ("fusion", "copy"):
        return "Adam update"
    return "loss and layers"


def instructions(hlo: str) -> dict[str, dict]:
    out = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$", hlo, re.M):
        op = re.search(r'op_name="([^"]+)"', m.group(4))
        out[m.group(1)] = {"shape": m.group(2), "opcode": m.group(3), "op_name": op.group(1) if op else ""}
    return out


def main() -> None:
    images, _ = data.load_fashion_mnist("train")
    images = jnp.asarray(images[: BATCH * STEPS])
    state = training.create_train_state(models.VAE(rngs=nnx.Rngs(0)))
    for seed in range(2):  # compile, warm up
        state, _ = training.train_epoch_fused(state, images, jax.random.key(seed))
    jax.block_until_ready(state.params)
    t0 = time.perf_counter()
    state, _ = training.train_epoch_fused(state, images, jax.random.key(2))
    jax.block_until_ready(state.params)
    wall_ms = 1e3 * (time.perf_counter() - t0) / STEPS

    folder = tempfile.mkdtemp(prefix="vae_lib_profile_")
    with jax.profiler.trace(folder):
        state, _ = training.train_epoch_fused(state, images, jax.random.key(3))
        jax.block_until_ready(state.params)
    trace = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])

    own = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines if plane.name == "/host:CPU" else ():
            if not line.name.startswith("tf_XLA"):  # XLA's threads only (not Python's)
                continue
            stack: list[tuple[int, str]] = []
            for start, end, name in sorted((e.start_ns, e.start_ns + e.duration_ns, e.name) for e in line.events):
                while stack and stack[-1][0] <= start:
                    stack.pop()
                if stack:
                    own[stack[-1][1]] -= end - start
                own[name] += end - start
                stack.append((end, name))
    own.pop("ThunkExecutor::Execute (wait for completion)", None)  # a thread waiting, not working

    hlo = training.lower_epoch(state, images[: STEPS * BATCH], jax.random.key(0), BATCH)
    instr = instructions(hlo.compile().as_text())
    kinds, dots = collections.Counter(), collections.Counter()
    for name, ns in own.items():
        kind = kind_of(name, instr.get(name, {}))
        kinds[kind] += ns
        if kind == "matrix products":
            dots[instr[name]["shape"].split("{")[0]] += ns
    total = sum(kinds.values())
    print(f"{'kind of work':28s} {'core-ms/step':>12s} {'share':>6s}")
    for kind, ns in kinds.most_common():
        print(f"{kind:28s} {ns / 1e6 / STEPS:12.3f} {ns / total:6.1%}")
        if kind == "matrix products":
            for shape, d in dots.most_common():
                print(f"    output {shape:18s} {d / 1e6 / STEPS:12.3f}")
    for kind, ns in kinds.most_common():
        print(json.dumps({"kind": kind, "core_ms_per_step": round(ns / 1e6 / STEPS, 3), "share": round(ns / total, 3)}))
    print(json.dumps({"wall_ms_per_step": round(wall_ms, 3), "core_ms_per_step": round(total / 1e6 / STEPS, 3)}))


if __name__ == "__main__":
    main()
