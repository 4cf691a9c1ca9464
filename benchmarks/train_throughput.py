"""Training throughput of the MLP VAE 784-400-20 on Fashion-MNIST, as an ablation, in one run.

    python benchmarks/train_throughput.py          (no arguments; about 3 minutes)

The model, data and optimizer are those of notebook 04: Bernoulli logits on dynamically
binarized Fashion-MNIST, Adam with learning rate 1e-3, batches of 128, the analytic-KL
negative ELBO of ``vae_lib.losses.vae_loss``. Each row of :data:`ROWS` runs the same training
steps and makes one change to the row it names (``vs``): from the eager NNX step, through
flax's own ``nnx.jit`` options (graph mode, donation, ``nnx.cached_partial``, ``graph=False``),
``jax.jit`` over the split state, one compiled loop per epoch, to each thing the library's
loop adds, and last ``vae_lib.training.train_epoch_fused`` as it ships. The step functions
come from ``vae_lib.step_variants``; the loop rows call ``step_variants.guarded_epoch`` (the
library's loop with its ``prefetch`` and ``guard`` switched) and the last row ``train_epoch_fused``.

Every row gets its batch order from ``jax.random.permutation`` and its step key from
``jax.random.fold_in(key, step)`` (inside the compiled code where there is one), so all of them
train on the same batches with the same randomness.

The rows are timed in alternation (round robin), so that a change in the machine's load hits
them all alike; after a warm-up (compilation) each compiled row trains ``STEPS`` steps per
round, the eager one ``EAGER_STEPS``. Each figure is the median over ``ROUNDS`` rounds, and
every round is printed.

Output: JSON lines. One per row, ``{"variant", "images_per_s", "rounds", "vs", "change"}``;
one ``{"matmul_gflops", "ceiling_images_per_s", ...}`` with the machine's fp32 matmul rate
(NumPy's BLAS on the step's own 14 matrix products, measured in this run between the rounds;
the rate of a 2048 x 2048 product too) and the images/s it allows for this model, given its
exact matmul FLOPs per image (``vae_lib.cost.step_matmul_flops``); and a summary line (the
library against the ceiling and against eager, the machine's load average, the CPU).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
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
ROUNDS = 5  # timed rounds after the warm-up
STEPS = 234  # steps per round for the compiled rows (half an epoch)
EAGER_STEPS = 20  # steps per round for the eager step (it runs at about 1/15 the speed)
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
    ("scan_epoch", "jax_jit_donate", "all steps in one lax.scan, data on the device, batches gathered up front"),
    ("loop", "scan_epoch", "vae_lib's loop: fori_loop, each batch gathered by its own step; no guard, no prefetch"),
    ("loop_where_guard", "loop", "the non-finite guard as jnp.where over every parameter at every step"),
    ("loop_where_guard_prefetch", "loop_where_guard", "the next batch drawn during the current step"),
    ("vae_lib", "loop_where_guard_prefetch", "the guard as a rollback (vae_lib.training.train_epoch_fused)"),
]
LOOP_OPTIONS = {
    "loop": {"guard": "none", "prefetch": False},
    "loop_where_guard": {"guard": "where", "prefetch": False},
    "loop_where_guard_prefetch": {"guard": "where", "prefetch": True},
}


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


class Runner:
    """One row's model state; ``run()`` trains one epoch (or its first `steps` batches)."""

    def __init__(self, name: str, images: np.ndarray):
        self.name, self.images, self.epoch = name, images, 0
        self.images_dev = jnp.asarray(images)
        model = models.VAE(rngs=nnx.Rngs(SEED))
        self.tx = optax.adam(LEARNING_RATE)
        self.rounds: list[float] = []
        if name in LOOP_OPTIONS or name == "vae_lib":
            self.state = training.create_train_state(model, learning_rate=LEARNING_RATE)
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
        """Train one epoch (or its first `steps` batches); return images per second."""
        self.epoch += 1
        key = jax.random.fold_in(jax.random.key(SEED), self.epoch)
        k_perm, k_steps = jax.random.split(key)
        n_steps = steps or len(self.images) // BATCH
        images = self.images_dev if steps is None else self.images_dev[: n_steps * BATCH]
        t0 = time.perf_counter()
        if self.name in LOOP_OPTIONS:
            self.state, _ = step_variants.guarded_epoch(self.state, images, key, BATCH, **LOOP_OPTIONS[self.name])
            jax.block_until_ready(self.state.params)
        elif self.name == "vae_lib":
            self.state, _ = training.train_epoch_fused(self.state, images, key, BATCH)
            jax.block_until_ready(self.state.params)
        elif self.name == "scan_epoch":
            order = jax.random.permutation(k_perm, len(images))
            self.params, self.opt_state, losses = step_variants.scan_epoch(
                self.graphdef, self.tx, self.params, self.opt_state, images, order, k_steps
            )
            losses.block_until_ready()
        else:
            order = np.asarray(jax.random.permutation(k_perm, len(self.images)))
            for i in range(n_steps):
                batch = self.images[order[i * BATCH : (i + 1) * BATCH]]
                if self.name in ("jax_jit", "jax_jit_donate"):
                    step = step_variants.jax_jit_step if self.name == "jax_jit" else step_variants.jit_donate_step
                    self.params, self.opt_state, loss = step(
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


def main() -> None:
    images, _ = data.load_fashion_mnist("train")
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    flops = step_matmul_flops(784, 400, 20)

    runners = {name: Runner(name, images) for name, _, _ in ROWS}
    for n, r in runners.items():  # warm-up: compile (eager: the per-operation compiles)
        r.run(steps=3 if n == "eager" else STEPS)
    peak, at_shapes = [], []
    for _ in range(ROUNDS):
        # The matmul rates are measured in every round, beside the rows, so that they see the
        # same background load; the ceiling uses the best round (a ceiling is a best case).
        # JAX's threads are idle while NumPy runs.
        peak.append(matmul_rate([((2048, 2048), (2048, 2048))], seconds=0.5))
        at_shapes.append(matmul_rate(step_matmul_shapes(BATCH), seconds=0.5))
        for n, r in runners.items():
            r.rounds.append(r.run(steps=EAGER_STEPS if n == "eager" else STEPS))

    medians = {}
    for name, vs, change in ROWS:
        r = runners[name]
        medians[name] = statistics.median(r.rounds)
        emit(variant=name, images_per_s=round(medians[name]), rounds=[round(x) for x in r.rounds], vs=vs, change=change)
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
    emit(
        vae_lib_fraction_of_ceiling=round(medians["vae_lib"] / ceiling, 3),
        vae_lib_fraction_of_peak_ceiling=round(medians["vae_lib"] * flops / (best_peak * 1e9), 3),
        vae_lib_over_eager=round(medians["vae_lib"] / medians["eager"], 1),
        load_avg_before=[round(x, 2) for x in load_before],
        load_avg_after=[round(x, 2) for x in os.getloadavg()],
        cpus=os.cpu_count(),
        cpu=_cpu(),
        seconds=round(time.perf_counter() - t_start, 1),
    )


if __name__ == "__main__":
    main()
