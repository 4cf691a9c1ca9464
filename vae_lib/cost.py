"""What one training step costs: its matrix products, their FLOPs, and the machine's rate.

The speed benchmark (benchmarks/train_throughput.py) and notebook 04 compare the measured
images per second with a ceiling: the machine's matmul rate on the step's own products
divided by the step's matmul FLOPs per image.

Notebook 07 adds a model on paper of a data-parallel step on n devices
(:func:`ring_allreduce_seconds`, :func:`data_parallel_step_seconds`, :func:`break_even_images`):
compute on each device's share of the batch, a ring all-reduce of the gradients (a bandwidth
term and a latency per round), and a fixed overhead per step, with no overlap between them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "break_even_images",
    "data_parallel_step_seconds",
    "matmul_rate",
    "read_throughput",
    "ring_allreduce_seconds",
    "step_matmul_flops",
    "step_matmul_shapes",
]

Shape = tuple[int, int]


def _dense_layers(in_features: int, hidden: int | Sequence[int], latent: int) -> tuple[list, list]:
    """(inputs, outputs) of every dense layer of the MLP VAE, and those that read the data."""
    h = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    h = tuple(x for x in h if x > 0)
    enc = list(zip((in_features, *h[:-1]), h, strict=True)) if h else []
    width = h[-1] if h else in_features
    heads = [(width, latent), (width, latent)]  # the mean and log-variance of q(z|x)
    dec = list(zip((latent, *reversed(h)), (*reversed(h), in_features), strict=True))
    on_data = enc[:1] if enc else heads  # layers reading the images: no input gradient
    return enc + heads + dec, on_data


def step_matmul_shapes(
    batch: int = 128, in_features: int = 784, hidden: int | Sequence[int] = 400, latent: int = 20
) -> list[tuple[Shape, Shape]]:
    """The matrix products of one training step of the MLP VAE, as pairs of operand shapes.

    A dense layer with a inputs and b outputs multiplies (B, a) by (a, b) in the forward
    pass; the backward pass computes its weight gradient X^T G, (a, B) by (B, b), and its
    input gradient G W^T, (B, b) by (b, a), except for the first encoder layer, whose
    input is the data and needs no gradient. The encoder's two heads (mean and
    log-variance) both feed the sampled z, so both need their input gradient.
    For 784-400-20 at batch 128: 5 forward, 5 weight-gradient and 4 input-gradient products.
    """
    layers, on_data = _dense_layers(in_features, hidden, latent)
    forward = [((batch, a), (a, b)) for a, b in layers]
    weight_grads = [((a, batch), (batch, b)) for a, b in layers]
    input_grads = [((batch, b), (b, a)) for a, b in layers if (a, b) not in on_data]
    return forward + weight_grads + input_grads


def step_matmul_flops(in_features: int = 784, hidden: int | Sequence[int] = 400, latent: int = 20) -> int:
    """Exact matmul FLOPs of one VAE training step, per image (forward and backward).

    Each product of :func:`step_matmul_shapes`, (m, k) by (k, n), costs 2 m k n FLOPs (a
    multiply and an add per term). Biases, activations, the loss, sampling and the
    optimizer are not matmuls and are not counted (at the default sizes they add roughly
    5% more operations, mostly Adam's update and the random numbers).
    For 784-400-20: forward 1,302,400 + backward 1,977,600 = 3,280,000 FLOPs per image.
    """
    shapes = step_matmul_shapes(1, in_features, hidden, latent)
    return sum(2 * a[0] * a[1] * b[1] for a, b in shapes)


def ring_allreduce_seconds(num_bytes: float, devices: int, bandwidth: float, latency: float = 0.0) -> float:
    """Time of a ring all-reduce of ``num_bytes`` on ``devices`` devices (no overlap with anything).

    The ring splits the array in n pieces and takes 2(n - 1) rounds, n - 1 to sum the pieces
    (reduce-scatter) and n - 1 to share the sums (all-gather); in each round every device
    sends one piece, num_bytes / n, to its neighbour. A round costs the link's ``latency``
    (seconds per message) plus the piece's bytes over ``bandwidth`` (bytes/s each way):

        t = 2 (n - 1) latency + 2 (n - 1) / n * num_bytes / bandwidth.

    One device needs no all-reduce (0 s).

    Raises:
        ValueError: fewer than one device, or a bandwidth that is not positive.
    """
    if devices < 1 or bandwidth <= 0:
        raise ValueError(f"need devices >= 1 and bandwidth > 0; got {devices} and {bandwidth}.")
    rounds = 2 * (devices - 1)
    return rounds * latency + rounds / devices * num_bytes / bandwidth


def data_parallel_step_seconds(
    images_per_device: float,
    flops_per_image: float,
    rate: float,
    grad_bytes: float,
    devices: int,
    bandwidth: float,
    latency: float = 0.0,
    overhead: float = 0.0,
) -> float:
    """Time of one data-parallel step: overhead + compute + the gradients' ring all-reduce.

    compute = images_per_device * flops_per_image / rate (FLOP/s); the all-reduce is
    :func:`ring_allreduce_seconds`; ``overhead`` is what every step costs whatever its size
    (launching the compiled program, Python between steps). Nothing overlaps: an upper
    bound for systems that send gradients while the backward pass still runs.
    """
    compute = images_per_device * flops_per_image / rate
    return overhead + compute + ring_allreduce_seconds(grad_bytes, devices, bandwidth, latency)


def break_even_images(
    flops_per_image: float, rate: float, grad_bytes: float, devices: int, bandwidth: float, latency: float = 0.0
) -> float:
    """Images per device per step at which compute takes as long as the all-reduce.

    Below it, communication dominates the step. b* = t_allreduce * rate / flops_per_image;
    the latency term raises it, the fixed overhead (in both) does not move it.
    """
    return ring_allreduce_seconds(grad_bytes, devices, bandwidth, latency) * rate / flops_per_image


def matmul_rate(shapes: Sequence[tuple[Shape, Shape]], seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of NumPy's BLAS over the products ``shapes``: the best of 5 repeats.

    Takes about ``seconds`` in all (five timed repeats and a short calibration).
    """
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal(a, dtype=np.float32), rng.standard_normal(b, dtype=np.float32)) for a, b in shapes]
    flops = sum(2 * a[0] * a[1] * b[1] for a, b in shapes)
    for a, b in mats:  # warm-up (threads, caches)
        a @ b
    t0 = time.perf_counter()
    reps = 0
    while time.perf_counter() - t0 < 0.2:
        for a, b in mats:
            a @ b
        reps += 1
    reps = max(1, int(reps * seconds / 5 / 0.2))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            for a, b in mats:
                a @ b
        best = min(best, time.perf_counter() - t)
    return flops * reps / best / 1e9


def read_throughput(path: str | os.PathLike) -> tuple[dict[str, dict], dict]:
    """Read the JSON lines that benchmarks/train_throughput.py prints (``make bench`` stores them).

    Returns:
        ``(rows, info)``: ``rows[name]`` is each row's line (``images_per_s``, ``rounds``,
        ``vs``, ``change``) in the benchmark's order; ``info`` merges the other lines (the
        matmul rate, the ceiling, the machine).

    Raises:
        ValueError: the file holds no benchmark row.
    """
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.startswith("{")]
    rows = {d["variant"]: d for d in lines if "variant" in d}
    if not rows:
        raise ValueError(f"{path} holds no row of benchmarks/train_throughput.py; run `make bench` to make one.")
    info = {k: v for d in lines if "variant" not in d for k, v in d.items()}
    return rows, info
