"""Training throughput of the MLP VAE 784-400-20 on Fashion-MNIST, as an ablation, in one run.

    python benchmarks/train_throughput.py                 (15 rounds; about 6 minutes on 2 cores)
    python benchmarks/train_throughput.py --quick --allow-busy      (a few steps, 2 rounds: tests)
    python benchmarks/train_throughput.py --torch         (adds the PyTorch reference row)

The model, data and optimizer are those of notebook 04: Bernoulli logits on dynamically
binarized Fashion-MNIST, Adam with learning rate 1e-3, batches of 128, the analytic-KL
negative ELBO of ``vae_lib.losses.vae_loss``. Each row of :data:`ROWS` runs the same training
steps and makes one change to the row it names (``vs``): from the eager NNX step, through
flax's own ``nnx.jit`` options (graph mode, donation, ``nnx.cached_partial``, ``graph=False``),
``jax.jit`` over the split state, the images on the device, the steps in one ``lax.scan``, the
batches gathered up front, to each thing the library's loop adds, and last
``vae_lib.training.train_epoch_fused`` as it ships. The step functions come from
``vae_lib.step_variants``; the loop rows call ``step_variants.guarded_epoch`` (the library's
loop with its ``prefetch`` and ``guard`` switched) and the last row ``train_epoch_fused``.

Same batches: in every round every row trains on the same ``steps * 128`` images (the first
ones of the training set) in the order ``jax.random.permutation`` of the round's key gives,
with step i's key ``jax.random.fold_in(key, i)`` (inside the compiled code where there is one).

Paired statistics. The rows are timed in alternation: each of ``--rounds`` rounds (default
15) times every row once, in an order shuffled per round (seeded; stored), so a change in the
machine's load hits them all alike and no row always follows the same one. A row's gain over
the row it changes is computed *within* each round (its throughput over its reference's, same
round), and reported as the median and the range (min..max) of those per-round ratios. An
effect is called ("faster" or "slower") only when the whole range lies on one side of 1;
otherwise the row says "no effect shown". ``images_per_s`` is still each row's median.

The machine's load. ``os.getloadavg()`` and the CPU counts are recorded before and after. If
the 1-minute load before starting exceeds 0.3 x the machine's CPUs, the run is refused (exit
status 3) unless ``--allow-busy`` is given, and then its output says ``"busy": true``.
``--wait-quiet S`` first waits up to S seconds for the load to fall below that (``make
bench`` uses it between its runs, whose own load takes a minute or two to decay).

Output: JSON lines. One per row: ``{"variant", "images_per_s", "rounds", "vs", "change",
"ratios", "gain_median", "gain_min", "gain_max", "effect"}`` (``rounds``: the throughput of
each round; ``ratios``: the paired per-round ratios against ``vs``; null for the first row);
one ``{"matmul_gflops", "ceiling_images_per_s", ...}`` with the machine's fp32 matmul rate
(NumPy's BLAS on the step's own 14 matrix products, measured in this run between the rounds;
the rate of a 2048 x 2048 product too) and the images/s it allows for this model, given its
exact matmul FLOPs per image (``vae_lib.cost.step_matmul_flops``); and a summary line (the
library against the ceiling and against eager, the load before and after, ``busy``, the CPU
counts, the settings and each round's order).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae_lib import data, models, step_variants, training
from vae_lib.cost import matmul_rate, step_matmul_flops, step_matmul_shapes

BATCH = 128
LEARNING_RATE = 1e-3
ROUNDS = 15  # timed rounds after the warm-up (--rounds)
STEPS = 234  # steps per round for the compiled rows (half an epoch)
EAGER_STEPS = 20  # steps per round for the eager step (it runs at about 1/15 the speed)
QUICK = {"rounds": 2, "steps": 6, "eager_steps": 2, "matmul_seconds": 0.05}  # --quick
BUSY_LOAD_PER_CPU = 0.3  # a 1-minute load above this many per CPU: the machine is busy
SEED = 0

#: (name, the row it changes, the one change)
ROWS = [
    ("eager", None, "the stateful NNX step (nnx.value_and_grad, nnx.Optimizer), not compiled"),
    ("nnx_jit", "eager", "compiled with nnx.jit (graph mode, flax's default)"),
    ("nnx_jit_donate", "nnx_jit", "model and optimizer donated (donate_argnames)"),
    ("nnx_cached_partial", "nnx_jit_donate", "nnx.cached_partial: the traversal of model and optimizer cached"),
    ("nnx_jit_tree", "nnx_jit", "nnx.jit(graph=False): model and optimizer handled as pytrees"),
    ("nnx_jit_tree_donate", "nnx_jit_tree", "model and optimizer donated (donate_argnames)"),
    ("jax_jit", "nnx_jit_tree", "jax.jit of a pure step over the state split once (nnx.split)"),
    ("jax_jit_donate", "jax_jit", "the split state donated (donate_argnums)"),
    (
        "device_data",
        "jax_jit_donate",
        "the images on the device, each step's batch gathered there by the compiled step (one call per step)",
    ),
    ("scan_steps", "device_data", "the steps in one lax.scan (one call per epoch), each batch gathered by its step"),
    ("scan_epoch", "scan_steps", "all the epoch's batches gathered up front, the scan runs over them"),
    (
        "loop",
        "scan_steps",
        "vae_lib's loop: fori_loop over a TrainState, every metric recorded per step; no guard, no prefetch",
    ),
    ("loop_where_guard", "loop", "the non-finite guard as jnp.where over every parameter at every step"),
    ("loop_where_guard_prefetch", "loop_where_guard", "the next batch drawn during the current step"),
    ("vae_lib", "loop_where_guard_prefetch", "the guard as a rollback (vae_lib.training.train_epoch_fused)"),
]
#: Candidates for a faster library step, each one change to the library's step (``vae_lib``).
#: They are timed in the same rounds as :data:`ROWS`; the library keeps a change only where the
#: paired ratio's whole range is above 1 and it trains the same model (or says what else changes).
FASTER_ROWS = [
    (
        "flat_adam",
        "vae_lib",
        "Adam over one flat vector of all the parameters (optax.flatten): the same update, rounded differently",
    ),
    (
        "rbg_keys",
        "vae_lib",
        "keys of jax's 'unsafe_rbg' generator (XLA's RngBitGenerator) instead of threefry: other random numbers",
    ),
    ("batch_256", "vae_lib", "batches of 256: half the steps for the same images, so another training"),
]
#: The optional PyTorch reference (--torch): benchmarks/torch_reference.py.
TORCH_ROW = ("torch_compile", "vae_lib", "PyTorch 784-400-20, torch.compile on loss and gradient, fused Adam")
LIBRARY_ROWS = {"vae_lib", "flat_adam", "rbg_keys", "batch_256"}  # train_epoch_fused on a TrainState
LOOP_OPTIONS = {
    "loop": {"guard": "none", "prefetch": False},
    "loop_where_guard": {"guard": "where", "prefetch": False},
    "loop_where_guard_prefetch": {"guard": "where", "prefetch": True},
}
PER_STEP_SPLIT = {"jax_jit": step_variants.jax_jit_step, "jax_jit_donate": step_variants.jit_donate_step}
ONE_CALL = {"scan_steps": step_variants.scan_steps, "scan_epoch": step_variants.scan_epoch}


# ------------------------------------------------------------------ the statistics
def paired_ratios(rounds: list[float], reference: list[float]) -> list[float]:
    """Each round's throughput over its reference row's throughput in the same round."""
    if len(rounds) != len(reference):
        raise ValueError(f"paired ratios need one reference per round: {len(rounds)} rounds, {len(reference)}.")
    return [a / b for a, b in zip(rounds, reference, strict=True)]


def effect(low: float, high: float) -> str:
    """ "faster" or "slower" only when the whole range of ratios is on one side of 1."""
    if low > 1:
        return "faster"
    if high < 1:
        return "slower"
    return "no effect shown"


def summarize(ratios: list[float]) -> dict:
    """Median and range of per-round ratios, and the effect that range supports."""
    low, high = min(ratios), max(ratios)
    return {"gain_median": statistics.median(ratios), "gain_min": low, "gain_max": high, "effect": effect(low, high)}


def is_busy(load_1min: float, cpus: int, per_cpu: float = BUSY_LOAD_PER_CPU) -> bool:
    """Whether a 1-minute load average says the machine is busy: above ``per_cpu`` x ``cpus``."""
    return load_1min > per_cpu * cpus


def wait_quiet(seconds: float, cpus: int, poll: float = 5.0) -> tuple[float, float, float]:
    """Wait up to ``seconds`` for the 1-minute load to fall below the busy line; the load then."""
    deadline = time.monotonic() + seconds
    while is_busy(os.getloadavg()[0], cpus) and time.monotonic() < deadline:
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    return os.getloadavg()


def round_order(n_rows: int, r: int) -> list[int]:
    """Round r's order of the rows: a permutation seeded by r."""
    order = list(range(n_rows))
    random.Random(SEED * 1000 + r).shuffle(order)
    return order


# ------------------------------------------------------------------ the rows
def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


class Runner:
    """One row's model state; ``run()`` trains on the first batches of the images given.

    ``images_dev`` (optional) is the same images already on the device, shared by all rows.
    """

    def __init__(self, name: str, images: np.ndarray, images_dev: jax.Array | None = None):
        self.name, self.images, self.epoch = name, np.asarray(images), 0
        self.images_dev = jnp.asarray(images) if images_dev is None else images_dev
        model = models.VAE(rngs=nnx.Rngs(SEED))
        self.tx = optax.adam(LEARNING_RATE)
        self.rounds: list[float] = []
        if name in LOOP_OPTIONS or name in LIBRARY_ROWS:
            tx = optax.flatten(self.tx) if name == "flat_adam" else self.tx
            self.state = training.create_train_state(model, tx=tx)
        elif name == "torch_compile":
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # torch_reference.py is beside this file
            from torch_reference import TorchStep

            self.torch = TorchStep(self.images, seed=SEED, learning_rate=LEARNING_RATE)
        elif name.startswith(("eager", "nnx")):
            self.model = model
            self.optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
            self.step = {
                "eager": step_variants.nnx_step,
                "nnx_jit": step_variants.nnx_jit_step,
                "nnx_jit_donate": step_variants.nnx_jit_donate_step,
                "nnx_jit_tree": step_variants.nnx_jit_tree_step,
                "nnx_jit_tree_donate": step_variants.nnx_jit_tree_donate_step,
                "nnx_cached_partial": step_variants.nnx_jit_donate_step,
            }[name]
            if name == "nnx_cached_partial":
                cached = nnx.cached_partial(self.step, self.model, self.optimizer)
                self.step = lambda model, optimizer, batch, key, i: cached(batch, key, i)
        else:
            self.graphdef, self.params = nnx.split(model)
            self.opt_state = self.tx.init(self.params)

    def run(self, steps: int | None = None) -> float:
        """Train on the first `steps` batches (default: all whole batches) of the images.

        Every row: the images ``images[:steps * 128]``, their order ``permutation(k_perm, n)``
        and step keys ``fold_in(k_steps, i)`` with ``k_perm, k_steps = split(key)``, the key
        from the row's epoch count: the same batches and keys for every row. Returns images/s.
        """
        self.epoch += 1
        impl = "unsafe_rbg" if self.name == "rbg_keys" else None
        key = jax.random.fold_in(jax.random.key(SEED, impl=impl), self.epoch)
        k_perm, k_steps = jax.random.split(key)
        n_steps = steps or len(self.images) // BATCH
        n = n_steps * BATCH
        images = self.images_dev[:n]
        t0 = time.perf_counter()
        if self.name in LOOP_OPTIONS:
            self.state, _ = step_variants.guarded_epoch(self.state, images, key, BATCH, **LOOP_OPTIONS[self.name])
            jax.block_until_ready(self.state.params)
        elif self.name in LIBRARY_ROWS:
            batch_size = 2 * BATCH if self.name == "batch_256" else BATCH
            self.state, _ = training.train_epoch_fused(self.state, images, key, batch_size)
            jax.block_until_ready(self.state.params)
        elif self.name == "torch_compile":
            self.torch.run(np.asarray(jax.random.permutation(k_perm, n)), BATCH)
        elif self.name in ONE_CALL:
            order = jax.random.permutation(k_perm, n)
            self.params, self.opt_state, losses = ONE_CALL[self.name](
                self.graphdef, self.tx, self.params, self.opt_state, images, order, k_steps
            )
            losses.block_until_ready()
        elif self.name == "device_data":
            order = jax.random.permutation(k_perm, n)
            for i in range(n_steps):
                self.params, self.opt_state, loss = step_variants.device_data_step(
                    self.graphdef, self.tx, self.params, self.opt_state, images, order, k_steps, i, batch_size=BATCH
                )
            loss.block_until_ready()
        else:
            order = np.asarray(jax.random.permutation(k_perm, n))
            for i in range(n_steps):
                batch = self.images[order[i * BATCH : (i + 1) * BATCH]]
                if self.name in PER_STEP_SPLIT:
                    self.params, self.opt_state, loss = PER_STEP_SPLIT[self.name](
                        self.graphdef, self.tx, self.params, self.opt_state, batch, k_steps, i
                    )
                else:
                    loss = self.step(self.model, self.optimizer, batch, k_steps, i)
            loss.block_until_ready()
        return n_steps * BATCH / (time.perf_counter() - t0)

    def params_state(self):
        """The row's current parameters (an nnx.State), for comparing rows."""
        if hasattr(self, "state"):
            return self.state.params
        if hasattr(self, "model"):
            return nnx.state(self.model, nnx.Param)
        return self.params


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def row_lines(runners: dict[str, Runner], rows: list[tuple] | None = None) -> list[dict]:
    """One output line per row (default :data:`ROWS`): median, rounds, paired ratios and their summary."""
    lines = []
    for name, vs, change in ROWS if rows is None else rows:
        r = runners[name]
        line = {"variant": name, "images_per_s": round(statistics.median(r.rounds)), "vs": vs, "change": change}
        line["rounds"] = [round(x) for x in r.rounds]
        if vs is None:
            line.update(ratios=None, gain_median=None, gain_min=None, gain_max=None, effect=None)
        else:
            ratios = paired_ratios(r.rounds, runners[vs].rounds)
            summary = summarize(ratios)
            line["ratios"] = [round(x, 4) for x in ratios]
            line.update({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Training throughput of the VAE step, as a paired ablation.")
    parser.add_argument("--rounds", type=int, default=None, help=f"timed rounds (default {ROUNDS}; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few steps and 2 rounds: checks the code, not speed")
    parser.add_argument("--allow-busy", action="store_true", help="run on a busy machine (the output says so)")
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch reference (needs torch)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S", help="wait up to S s for a quiet machine")
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK["rounds"] if args.quick else ROUNDS)
    steps = QUICK["steps"] if args.quick else STEPS
    eager_steps = QUICK["eager_steps"] if args.quick else EAGER_STEPS
    matmul_seconds = QUICK["matmul_seconds"] if args.quick else 0.5
    if rounds < 2:
        parser.error("--rounds must be at least 2 (a range needs two rounds)")

    cpus = os.cpu_count() or 1
    load_before = wait_quiet(args.wait_quiet, cpus) if args.wait_quiet > 0 else os.getloadavg()
    busy = is_busy(load_before[0], cpus)
    if busy:
        message = (
            f"the machine is busy: 1-minute load {load_before[0]:.2f} > {BUSY_LOAD_PER_CPU} x {cpus} CPUs; "
            "timings would mostly measure the other work."
        )
        if not args.allow_busy:
            print(
                f"refused: {message} Run on a quiet machine, or pass --allow-busy (the output is marked).",
                file=sys.stderr,
            )
            return 3
        print(f'warning: {message} The output is marked "busy": true.', file=sys.stderr)

    images, _ = data.load_fashion_mnist("train")
    images = images[: steps * BATCH] if args.quick else images
    images_dev = jnp.asarray(images)
    t_start = time.perf_counter()
    flops = step_matmul_flops(784, 400, 20)

    rows = ROWS + FASTER_ROWS + ([TORCH_ROW] if args.torch else [])
    runners = {name: Runner(name, images, images_dev) for name, _, _ in rows}
    for n, r in runners.items():  # warm-up: compile (eager: the per-operation compiles)
        r.run(steps=min(3, eager_steps) if n == "eager" else steps)
    peak, at_shapes, orders = [], [], []
    names = list(runners)
    for k in range(rounds):
        # The matmul rates are measured in every round, beside the rows, so that they see the
        # same background load; the ceiling uses the best round (a ceiling is a best case).
        # JAX's threads are idle while NumPy runs.
        peak.append(matmul_rate([((2048, 2048), (2048, 2048))], seconds=matmul_seconds))
        at_shapes.append(matmul_rate(step_matmul_shapes(BATCH), seconds=matmul_seconds))
        order = [names[j] for j in round_order(len(names), k)]
        orders.append(order)
        for n in order:
            runners[n].rounds.append(runners[n].run(steps=eager_steps if n == "eager" else steps))

    lines = row_lines(runners, rows)
    for line in lines:
        emit(**line)
    # The ceiling: NumPy's fp32 matmul rate on the step's own 14 matrix products at batch 128
    # (what this machine's BLAS does with exactly this model's matmul work), divided by the
    # exact matmul FLOPs of one image's training step. Also reported: the rate of one large
    # square product and the ceiling it would give.
    rate, best_peak = max(at_shapes), max(peak)
    ceiling = rate * 1e9 / flops
    emit(
        matmul_gflops=round(rate, 1),
        ceiling_images_per_s=round(ceiling),
        flops_per_image=flops,
        matmul_shapes="the step's 14 products at batch 128",
        peak_gflops_2048=round(best_peak, 1),
        ceiling_at_peak_images_per_s=round(best_peak * 1e9 / flops),
    )
    summary = {}
    if "vae_lib" in runners:
        vae = runners["vae_lib"].rounds
        summary = {
            "vae_lib_fraction_of_ceiling": round(statistics.median(vae) / ceiling, 3),
            "vae_lib_fraction_of_ceiling_range": [round(min(vae) / ceiling, 3), round(max(vae) / ceiling, 3)],
            "vae_lib_fraction_of_peak_ceiling": round(statistics.median(vae) * flops / (best_peak * 1e9), 3),
        }
        if "eager" in runners:
            summary["vae_lib_over_eager"] = round(statistics.median(paired_ratios(vae, runners["eager"].rounds)), 1)
        if "torch_compile" in runners:  # the library over PyTorch, paired round by round
            over = summarize(paired_ratios(vae, runners["torch_compile"].rounds))
            summary["vae_lib_over_torch"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in over.items()}
            summary["torch_version"] = runners["torch_compile"].torch.torch.__version__
    emit(
        **summary,
        load_avg_before=[round(x, 2) for x in load_before],
        load_avg_after=[round(x, 2) for x in os.getloadavg()],
        busy=busy,
        busy_line=round(BUSY_LOAD_PER_CPU * cpus, 2),
        cpus=cpus,
        cpus_usable=len(os.sched_getaffinity(0)),
        cpu=_cpu(),
        rounds=rounds,
        steps=steps,
        eager_steps=eager_steps,
        quick=args.quick,
        round_orders=orders,
        seconds=round(time.perf_counter() - t_start, 1),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
