"""Training across processes: what each process of a multi-process run does.

A run of N processes, each with D devices, trains one model on a mesh of N * D devices:
every process calls :func:`run_worker`, which joins the others through
``jax.distributed.initialize`` (a coordinator at ``host:port``, run by process 0) and then
trains with :func:`vae_lib.sharded_training.fit_sharded`, each process feeding only its own
rows of every global batch. Process 0 writes the losses and the parameters after the first step
and at the end; :func:`compare` measures how far they are from a one-device run of the same
batches and keys.

Starting, watching and stopping the processes is the command line's job::

    python -m vae_lib.cli.launch --processes 2 --devices-per-process 2 --steps 20

(:mod:`vae_lib.cli.launch`, which also explains how to run across machines).
"""

from __future__ import annotations

import os

__all__ = ["LOCAL_HOSTS", "LOSS_RTOL", "LOSS_STEPS", "TOLERANCE", "compare", "join", "run_worker", "split_address"]

#: Largest difference between a parameter of the distributed and of the one-device run after
#: the first step that still counts as the same result: a tenth of Adam's step at learning rate
#: 1e-3. Only the first step is held to it: training amplifies rounding differences, so later
#: parameters drift apart (measured, 2 processes x 2 CPU devices against one: 4e-7 after one
#: step, 4e-3 after 60, 1.9e-2 after 100, 9e-2 after 400).
TOLERANCE = 1e-4
#: Largest relative difference between the two runs' loss at any of the first LOSS_STEPS steps that
#: still counts as the same training (measured: 1e-7 at first, 2e-5 after 60 steps, 1e-3 after
#: 100, 3e-3 after 400; later steps are not compared, since the runs keep drifting apart).
LOSS_RTOL = 1e-2
LOSS_STEPS = 100
#: Coordinator hosts that mean "this machine": the coordinator then listens on loopback only.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def split_address(address: str | None) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``; raises ValueError with an example when it is not that."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"the coordinator address must be HOST:PORT with a port from 1 to 65535 (for example "
            f"127.0.0.1:12355); got {address!r}."
        )
    return host.strip("[]"), int(port)


def join(processes: int | None, process_id: int | None, coordinator: str | None, init_timeout: int = 120) -> None:
    """``jax.distributed.initialize``: this process joins the others (before any other JAX call).

    With a ``coordinator`` (``host:port``, process 0 starts the service there), the process
    count and this process's id are given. Without one, JAX finds what is not given (None) by
    itself on Cloud TPU VMs, under SLURM and under Open MPI; elsewhere it reads the coordinator
    from the environment variable ``JAX_COORDINATOR_ADDRESS``, and the count and id must be
    given. A coordinator on this machine's loopback listens on loopback only.
    """
    import jax

    if coordinator is None:  # a cluster JAX detects, or JAX_COORDINATOR_ADDRESS with the count and id given
        jax.distributed.initialize(num_processes=processes, process_id=process_id, initialization_timeout=init_timeout)
        return
    host, port = split_address(coordinator)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=processes,
        process_id=process_id,
        initialization_timeout=init_timeout,
        coordinator_bind_address=f"{host}:{port}" if host in LOCAL_HOSTS else None,
    )


def _params_on_host(state) -> dict:
    """Every parameter of a replicated state as a NumPy array, named by its path."""
    import jax
    import numpy as np

    flat, _ = jax.tree_util.tree_flatten_with_path(state.params)
    return {"param" + jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0)) for path, leaf in flat}


def run_worker(
    process_id: int,
    processes: int,
    devices_per_process: int | None,
    steps: int,
    out: str | os.PathLike,
    coordinator: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    log_every: int = 0,
    init_timeout: int = 120,
    heartbeat: float = 1.0,
) -> None:
    """One process of a run: join the others, train ``steps`` steps together, save the result.

    Must run in a fresh process: JAX's devices are fixed when its first operation runs, and
    ``jax.distributed.initialize`` must come before that.

    Args:
        process_id, processes: this process's index and the number of processes.
        devices_per_process: that many *simulated* CPU devices (one machine standing in for
            many devices); None uses the devices JAX finds (GPUs, TPUs, or this CPU).
        steps, batch_size: the run; the batch is split over all processes' devices.
        out: process 0 writes the losses, the parameters after the first step and the final
            parameters there (``.npz``).
        coordinator: ``host:port`` of the coordinator; None lets JAX find the cluster
            (:func:`join`). Unused with one process.
        seed: the model's initialisation (``nnx.Rngs(seed)``) and the training key.
        log_every: print the loss every this many steps (0: ten times per run).
        init_timeout: seconds to wait for all processes to join.
        heartbeat: a line ``heartbeat step N`` every this many seconds, from a thread, and one
            after every step: a launcher that hears nothing from a process knows it is stuck.
    """
    import threading

    import jax

    done = [0]
    beating = threading.Event()

    def beat() -> None:  # a frozen process (stopped, or stuck holding the interpreter) stops beating
        while not beating.wait(heartbeat):
            print(f"heartbeat step {done[0]}", flush=True)

    threading.Thread(target=beat, daemon=True).start()
    if devices_per_process is not None:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", devices_per_process)  # before any JAX operation
    if processes > 1:
        join(processes, process_id, coordinator, init_timeout)
    import numpy as np
    from flax import nnx

    from vae_lib import data, models, sharded_training, sharding, training

    print(
        f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local "
        f"{jax.devices()[0].platform} devices of {jax.device_count()}; this process feeds "
        f"{batch_size // jax.process_count()} of the {batch_size} images of each batch",
        flush=True,
    )
    images, _ = data.load_fashion_mnist("train")
    state = training.create_train_state(models.VAE(rngs=nnx.Rngs(seed)))
    every = log_every or max(1, steps // 10)
    first: dict = {}

    def after_step(i: int, state, loss: float) -> None:
        done[0] = i
        if i == 1 and jax.process_index() == 0:
            first.update({"first_" + k: v for k, v in _params_on_host(state).items()})
        print(f"heartbeat step {i}", flush=True)
        if i % every == 0:
            print(f"step {i}/{steps}: loss {loss:.3f}", flush=True)

    state, losses = sharded_training.fit_sharded(
        state, images, mesh=sharding.make_mesh(), key=jax.random.key(seed), steps=steps, batch_size=batch_size,
        on_step=after_step,
    )  # fmt: skip
    beating.set()
    if jax.process_index() == 0:
        final = _params_on_host(state)
        np.savez(out, losses=losses, **first, **final)
        print(f"final parameters written ({len(final)} arrays)", flush=True)
    if processes > 1:
        jax.distributed.shutdown()


def compare(params_file: str | os.PathLike, reference_file: str | os.PathLike) -> dict[str, float]:
    """How far two workers' results are apart: the parameters after the first step and at the
    end (largest absolute difference) and the losses of the first :data:`LOSS_STEPS` steps
    (largest relative difference)."""
    import numpy as np

    with np.load(params_file) as a, np.load(reference_file) as b:
        if sorted(a.files) != sorted(b.files):
            raise ValueError(f"{params_file} and {reference_file} hold different arrays.")

        def largest(prefix: str) -> float:
            return max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files if k.startswith(prefix))

        la, lb = a["losses"][:LOSS_STEPS], b["losses"][:LOSS_STEPS]
        return {
            "first_step_max_abs_diff": largest("first_param"),
            "final_max_abs_diff": largest("param"),
            "loss_max_rel_diff": float(np.max(np.abs(la - lb) / np.abs(lb))),
        }
