"""Training throughput of the MLP VAE 784-400-20 on Fashion-MNIST, five ways, in one run.

    python benchmarks/train_throughput.py          (no arguments; 1.5 to 3 minutes)

The model, data and optimizer are those of notebook 04: Bernoulli logits on dynamically
binarized Fashion-MNIST, Adam with learning rate 1e-3, batches of 128, the analytic-KL
negative ELBO of ``vae_lib.losses.vae_loss``. Five ways to run the same training step
(the first four are ``vae_lib.step_variants``, the last ``vae_lib.training``):

  eager       the NNX step (nnx.value_and_grad + nnx.Optimizer) with no compilation:
              every jnp operation is dispatched from Python one at a time
  nnx_jit     the same stateful step under ``nnx.jit`` (default graph mode)
  jit_donate  ``jax.jit`` over the split (functional) state: parameters and Adam state are
              plain pytrees, donated so XLA updates them in place
  scan_epoch  one ``jax.jit`` per epoch: shuffle on the device, gather the epoch's uint8
              batches there and ``lax.scan`` the step over them (buffers donated)
  vae_lib     ``vae_lib.training.train_epoch_fused``, the library's default (what ``fit`` and the
              notebook use): the epoch in one compiled loop over the device-resident data,
              drawing the next batch's binarization while the current step runs

Every way gets its batch order from ``jax.random.permutation`` and its step key from
``jax.random.fold_in(key, step)`` (inside the compiled code where there is one), so all
of them train on the same batches with the same randomness.

The variants are timed in alternation (round robin), so that a change in the machine's
load hits them all alike; after a warm-up (compilation) each jitted variant trains one
full epoch (468 steps) per round, the eager one a fixed number of steps. Each variant's
figure is the median over rounds.

Output: JSON lines. One per variant, ``{"variant": NAME, "images_per_s": N, ...}``; one
``{"matmul_gflops": G, "ceiling_images_per_s": C, ...}`` with the machine's fp32 matmul
rate (numpy's BLAS on the step's own matrix products, measured in this run; the rate of
a large square product is given too) and the images/s it allows for this model, given
its exact matmul FLOPs per image (``vae_lib.cost.step_matmul_flops``); and a
summary line with the two targets (vae_lib against the ceiling, and against eager) and
the machine's load average, since other processes on the machine slow every figure.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae_lib import data, models, training
from vae_lib.cost import matmul_rate, step_matmul_flops, step_matmul_shapes
from vae_lib.step_variants import jit_donate_step, nnx_jit_step, nnx_step, scan_epoch

BATCH = 128
LEARNING_RATE = 1e-3
ROUNDS = 5  # timed rounds after the warm-up
EAGER_STEPS = 25  # steps per round for the eager step (it runs at about 1/12 the speed)
SEED = 0


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


# ----------------------------------------------------------------- one epoch of each way
class Runner:
    """Holds one variant's model state and trains it for an epoch (or `steps`) at a time."""

    def __init__(self, name: str, images: np.ndarray):
        self.name, self.images, self.epoch = name, images, 0
        self.images_dev = jnp.asarray(images)
        model = models.VAE(rngs=nnx.Rngs(SEED))
        self.tx = optax.adam(LEARNING_RATE)
        if name in ("eager", "nnx_jit"):
            self.model = model
            self.optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        elif name == "vae_lib":
            self.state = training.create_train_state(model, learning_rate=LEARNING_RATE)
        else:
            self.graphdef, self.params = nnx.split(model)
            self.opt_state = self.tx.init(self.params)
        self.rounds: list[float] = []

    def run(self, steps: int | None = None) -> float:
        """Train one epoch (or its first `steps` batches); return images per second."""
        self.epoch += 1
        key = jax.random.fold_in(jax.random.key(SEED), self.epoch)
        k_perm, k_steps = jax.random.split(key)
        n_steps = steps or len(self.images) // BATCH
        t0 = time.perf_counter()
        if self.name == "vae_lib":
            images = self.images_dev if steps is None else self.images_dev[: n_steps * BATCH]
            self.state, _ = training.train_epoch_fused(self.state, images, key, BATCH)
            jax.block_until_ready(self.state.params)
        elif self.name == "scan_epoch":
            images = self.images_dev if steps is None else self.images_dev[: n_steps * BATCH]
            order = jax.random.permutation(k_perm, len(images))
            self.params, self.opt_state, losses = scan_epoch(
                self.graphdef, self.tx, self.params, self.opt_state, images, order, k_steps
            )
            losses.block_until_ready()
        else:
            order = np.asarray(jax.random.permutation(k_perm, len(self.images)))
            for i in range(n_steps):
                batch = self.images[order[i * BATCH : (i + 1) * BATCH]]
                if self.name == "eager":
                    loss = nnx_step(self.model, self.optimizer, batch, k_steps, i)
                elif self.name == "nnx_jit":
                    loss = nnx_jit_step(self.model, self.optimizer, batch, k_steps, i)
                else:
                    self.params, self.opt_state, loss = jit_donate_step(
                        self.graphdef, self.tx, self.params, self.opt_state, batch, k_steps, i
                    )
            loss.block_until_ready()
        return n_steps * BATCH / (time.perf_counter() - t0)


def main() -> None:
    images, _ = data.load_fashion_mnist("train")
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    flops = step_matmul_flops(784, 400, 20)

    names = ["eager", "nnx_jit", "jit_donate", "scan_epoch", "vae_lib"]
    runners = {n: Runner(n, images) for n in names}
    for n, r in runners.items():  # warm-up: compile (eager: the per-operation compiles)
        r.run(steps=3 if n == "eager" else None)
    peak, at_shapes = [], []
    for _ in range(ROUNDS):
        # The matmul rates are measured in every round, beside the variants, so that they
        # see the same background load; the ceiling uses the best round (a ceiling is a
        # best case). JAX's threads are idle while numpy runs.
        peak.append(matmul_rate([((2048, 2048), (2048, 2048))], seconds=0.5))
        at_shapes.append(matmul_rate(step_matmul_shapes(BATCH), seconds=0.5))
        for n, r in runners.items():
            r.rounds.append(r.run(steps=EAGER_STEPS if n == "eager" else None))

    medians = {}
    for n, r in runners.items():
        medians[n] = statistics.median(r.rounds)
        emit(variant=n, images_per_s=round(medians[n]), rounds=[round(x) for x in r.rounds])
    # The ceiling: numpy's fp32 matmul rate on the step's own 14 matrix products at batch
    # 128 (what this machine's BLAS does with exactly this model's matmul work), divided
    # by the exact matmul FLOPs of one image's training step. Also reported: the rate of
    # one large square product (the machine's matmul peak) and the ceiling it would give;
    # small products such as 128x20 @ 20x400 cannot reach that peak on any library.
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
        seconds=round(time.perf_counter() - t_start, 1),
    )


if __name__ == "__main__":
    main()
