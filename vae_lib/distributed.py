"""Training across processes: ``python -m vae_lib.distributed`` starts them, watches them, compares.

    python -m vae_lib.distributed --processes 2 --devices-per-process 2 --steps 20

starts 2 worker processes on this machine, each with 2 simulated CPU devices, joined by
``jax.distributed`` (a coordinator on 127.0.0.1 at a free port; CPU collectives through gloo)
into one mesh of 4 devices. Together they train the 784-400-20 VAE for 20 steps on
Fashion-MNIST, each global batch of 128 split over the 4 devices, each process feeding only
its own rows (:func:`vae_lib.sharded_training.fit_sharded`). At the same time a third process
trains the same steps alone on one device. The launcher streams every process's log, prefixed
with its name, and prints one JSON line last::

    {"processes": 2, "devices": 4, "steps": 20, "matches_single_process": true,
     "max_abs_diff": 8.8e-06, "tolerance": 0.0001, "final_loss": 370.494, "seconds": 26.1,
     "worker_cpu_s": 24.0, "worker_peak_mb": 520}

``max_abs_diff`` is the largest difference between any final parameter of the two runs; they
match when it is at most :data:`TOLERANCE` (a tenth of one Adam step, whose size is the
learning rate 1e-3): splitting a sum over devices changes the order of float additions, and
Adam turns a rounding difference in a gradient near zero into a visible difference in that
parameter's step. ``seconds`` is the run's wall time, ``worker_cpu_s`` the CPU time of all
workers together and ``worker_peak_mb`` the largest peak resident memory of any one worker.

If any process exits with an error or is killed, the launcher stops the others at once,
names the process and prints its last log lines, and exits with status 1; after ``--timeout``
seconds it does the same. The workers run in a process group of their own, which the launcher
ends as a whole, and each one is told by the kernel to stop if the launcher itself dies, so
no process is left behind.

**Across machines** (the same command; not tested in this project, which has one machine):
give every machine the coordinator's address (a port on the machine that runs process 0) and
the processes that machine runs. On machine A (host name machine-a)::

    python -m vae_lib.distributed --processes 2 --devices-per-process 4 --steps 100 \\
        --coordinator machine-a:12355 --process-ids 0

and on machine B the same with ``--process-ids 1``. The launcher that runs process 0 also runs
the one-device comparison and reports it; the others report ``null`` for it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TOLERANCE", "LaunchError", "compare", "free_port", "launch", "main", "run_worker"]

#: Largest difference between a parameter of the distributed and of the one-device run that
#: still counts as the same result: a tenth of Adam's step at learning rate 1e-3.
TOLERANCE = 1e-4
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_LAST_LINES = 15


class LaunchError(RuntimeError):
    """A worker failed, the run timed out, or the coordinator cannot be reached or bound."""


# ------------------------------------------------------------------ the worker
def run_worker(
    process_id: int,
    processes: int,
    devices_per_process: int,
    steps: int,
    out: str | os.PathLike,
    coordinator: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    log_every: int = 0,
    init_timeout: int = 120,
) -> None:
    """One process of a run: join the others, train ``steps`` steps together, save the result.

    Must run in a fresh process: the number of CPU devices is set before JAX starts its
    CPU backend, which fixes it for the life of the process.

    Args:
        process_id, processes: this process's index and the number of processes.
        devices_per_process: simulated CPU devices in this process.
        steps, batch_size: the run; the batch is split over all processes' devices.
        out: process 0 writes the final parameters and the losses there (``.npz``).
        coordinator: ``host:port`` of the coordinator (process 0 starts it there); needed
            when ``processes > 1``.
        seed: the model's initialisation (``nnx.Rngs(seed)``) and the training key.
        log_every: print the loss every this many steps (0: ten times per run).
        init_timeout: seconds to wait for all processes to join.
    """
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", devices_per_process)  # before any JAX operation
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    if processes > 1:
        host, port = _split_address(coordinator)
        bind = f"{host}:{port}" if host in _LOCAL_HOSTS else None  # loopback runs listen on loopback only
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=processes,
            process_id=process_id,
            initialization_timeout=init_timeout,
            coordinator_bind_address=bind,
        )
    import numpy as np
    from flax import nnx

    from vae_lib import data, models, sharded_training, sharding, training

    print(
        f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local devices "
        f"of {jax.device_count()}; this process feeds {batch_size // jax.process_count()} of the "
        f"{batch_size} images of each batch",
        flush=True,
    )
    images, _ = data.load_fashion_mnist("train")
    state = training.create_train_state(models.VAE(rngs=nnx.Rngs(seed)))
    state, losses = sharded_training.fit_sharded(
        state,
        images,
        mesh=sharding.make_mesh(),
        key=jax.random.key(seed),
        steps=steps,
        batch_size=batch_size,
        log_every=log_every or max(1, steps // 10),
        log=lambda line: print(line, flush=True),
    )
    if jax.process_index() == 0:
        flat, _ = jax.tree_util.tree_flatten_with_path(state.params)
        arrays = {jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0)) for path, leaf in flat}
        np.savez(out, losses=losses, **{"param" + name: a for name, a in arrays.items()})
        print(f"final parameters written ({len(arrays)} arrays)", flush=True)
    if processes > 1:
        jax.distributed.shutdown()


# ------------------------------------------------------------------ the launcher
@dataclass
class _Child:
    name: str
    process: subprocess.Popen
    log_path: Path
    read: int = 0
    partial: str = ""
    lines: list[str] = field(default_factory=list)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _split_address(address: str | None) -> tuple[str, int]:
    host, sep, port = (address or "").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LaunchError(f"the coordinator address must be HOST:PORT (for example 127.0.0.1:12355); got {address!r}.")
    return host.strip("[]"), int(port)


def _check_can_bind(address: str) -> None:
    """Fail now, with a clear message, if the coordinator's port on this machine is taken."""
    host, port = _split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:  # not an address of this machine: the coordinator runs elsewhere
                return
            raise LaunchError(
                f"the coordinator cannot bind to {address}: {e.strerror}. Another program uses that port; "
                f"choose a free one (or leave --coordinator out on one machine: a free port is picked)."
            ) from e


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # PR_SET_PDEATHSIG: the kernel sends the signal when the launcher dies, however it dies.
    # SIGKILL, because jax.distributed catches SIGTERM (it treats it as a preemption notice).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _spawn(name: str, argv: list[str], log_path: Path, group: int | None) -> _Child:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vae_lib.distributed", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            process_group=0 if group is None else group,
            preexec_fn=_die_with_parent,
        )
    return _Child(name, process, log_path)


def _stream(child: _Child, echo) -> None:
    """Echo the complete lines the child has written since the last call, prefixed with its name."""
    with open(child.log_path, "rb") as f:
        f.seek(child.read)
        chunk = f.read()
    child.read += len(chunk)
    text = child.partial + chunk.decode(errors="replace")
    *complete, child.partial = text.split("\n")
    for line in complete:
        child.lines.append(line)
        echo(f"[{child.name}] {line}")


def _stop(children: list[_Child], grace: float = 2.0) -> None:
    """End every child: SIGTERM to their process group, then SIGKILL after ``grace`` seconds.

    (A worker that has joined jax.distributed treats SIGTERM as a preemption notice and keeps
    running; SIGKILL ends it.)
    """
    group = children[0].process.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
        deadline = time.monotonic() + grace
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        if all(c.process.poll() is not None for c in children):
            return


def _exit_status(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _failure(bad: list[_Child], folder: Path, coordinator: str) -> LaunchError:
    first = next((c for c in bad if c.process.returncode < 0), bad[0])  # a killed process is the likely cause
    others = [f"{c.name} {_exit_status(c.process.returncode)}" for c in bad if c is not first]
    tail = "\n".join("    " + line for line in first.lines[-_LAST_LINES:] + [first.partial] if line) or "    (empty)"
    hint = ""
    if any(s in tail for s in ("Failed to start RPC server", "Failed to add port", "Address already in use")):
        hint = f"\nThe coordinator could not bind to {coordinator}: choose another port with --coordinator HOST:PORT."
    return LaunchError(
        f"{first.name} (pid {first.process.pid}) {_exit_status(first.process.returncode)}"
        + (f" ({'; '.join(others)})" if others else "")
        + f"; the other processes were stopped. Last lines of its log (all logs in {folder}):\n{tail}{hint}"
    )


def compare(params_file: str | os.PathLike, reference_file: str | os.PathLike) -> float:
    """The largest absolute difference between the parameters stored in two workers' files."""
    import numpy as np

    with np.load(params_file) as a, np.load(reference_file) as b:
        names = sorted(k for k in a.files if k.startswith("param"))
        if names != sorted(k for k in b.files if k.startswith("param")):
            raise LaunchError(f"{params_file} and {reference_file} hold different parameters.")
        return max(float(np.max(np.abs(a[k] - b[k]))) for k in names)


def launch(
    processes: int,
    devices_per_process: int,
    steps: int,
    *,
    batch_size: int = 128,
    coordinator: str | None = None,
    process_ids: list[int] | None = None,
    compare_single: bool = True,
    log_every: int = 0,
    timeout: float = 600.0,
    workdir: str | os.PathLike | None = None,
    echo=print,
) -> dict:
    """Run the workers on this machine, watch them, and compare with one process on one device.

    Args:
        processes, devices_per_process, steps, batch_size: the run (see the module docstring).
        coordinator: ``host:port``; by default 127.0.0.1 at a free port.
        process_ids: which of the processes run here (default: all of them).
        compare_single: also train on one device in one process, and compare (process 0 only).
        log_every: the workers log the loss every this many steps (0: ten times per run).
        timeout: seconds before the run counts as hung: everything is stopped.
        workdir: where logs and parameter files go (default: a temporary folder, deleted
            after a successful run and kept after a failed one).
        echo: called with every log line, prefixed with the process's name.

    Returns:
        The result line's dictionary.

    Raises:
        ValueError: arguments that cannot make a run, said how.
        LaunchError: a process failed or the run timed out; the message names the process and
            shows its last log lines. Every process started here has been stopped.
    """
    for name, value in (("processes", processes), ("devices_per_process", devices_per_process), ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}.")
    total = processes * devices_per_process
    if batch_size % total:
        raise ValueError(
            f"the batch of {batch_size} must split evenly over {total} devices: pass a multiple of {total}."
        )
    ids = list(range(processes)) if process_ids is None else sorted(set(process_ids))
    if not ids or not all(0 <= i < processes for i in ids):
        raise ValueError(f"process ids must lie in 0..{processes - 1}; got {process_ids}.")
    coordinator = coordinator or f"127.0.0.1:{free_port()}"
    if processes > 1 and 0 in ids:
        _check_can_bind(coordinator)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vae_lib_distributed_"))
    folder.mkdir(parents=True, exist_ok=True)
    common = ["--devices-per-process", str(devices_per_process), "--steps", str(steps), "--batch-size", str(batch_size)]
    common += ["--log-every", str(log_every)]
    runs = [
        (f"process {i}", ["--worker", str(i), "--processes", str(processes), "--coordinator", coordinator, *common])
        for i in ids
    ]
    if compare_single and 0 in ids:
        one = ["--devices-per-process", "1", *common[2:]]
        runs.append(("one device", ["--worker", "0", "--processes", "1", *one]))
    echo(f"launching {len(ids)} of {processes} processes x {devices_per_process} devices, coordinator {coordinator}")
    start = time.monotonic()
    children: list[_Child] = []
    try:
        for name, argv in runs:
            out = folder / (name.replace(" ", "_") + ".npz")
            log_path = folder / (name.replace(" ", "_") + ".log")
            group = children[0].process.pid if children else None  # one process group: the first child's
            children.append(_spawn(name, [*argv, "--out", str(out)], log_path, group))
            echo(f"{name}: pid {children[-1].process.pid}")
        while True:
            for c in children:
                _stream(c, echo)
            bad = [c for c in children if c.process.poll() not in (None, 0)]
            if bad:
                time.sleep(0.2)  # let the others' exits (and last log lines) arrive
                for c in children:
                    c.process.poll()
                    _stream(c, echo)
                bad = [c for c in children if c.process.returncode not in (None, 0)]
                raise _failure(bad, folder, coordinator)
            if all(c.process.returncode == 0 for c in children):
                break
            if time.monotonic() - start > timeout:
                running = [c.name for c in children if c.process.returncode is None]
                raise LaunchError(
                    f"the run took longer than {timeout:g} s; stopped {', '.join(running)} (logs in {folder})."
                )
            time.sleep(0.05)
    except BaseException:
        if children:
            _stop(children)
        raise
    import numpy as np

    result = {"processes": processes, "devices": total, "steps": steps}
    if 0 in ids and compare_single:
        diff = compare(folder / "process_0.npz", folder / "one_device.npz")
        result.update(matches_single_process=diff <= TOLERANCE, max_abs_diff=diff, tolerance=TOLERANCE)
    else:
        result.update(matches_single_process=None, max_abs_diff=None, tolerance=TOLERANCE)
    if 0 in ids:
        with np.load(folder / "process_0.npz") as f:
            result["final_loss"] = round(float(f["losses"][-1]), 3)
    result["seconds"] = round(time.monotonic() - start, 1)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # all ended children of this process: the workers
    result["worker_cpu_s"] = round(workers.ru_utime + workers.ru_stime, 1)
    result["worker_peak_mb"] = round(workers.ru_maxrss / 1024)  # the largest of them
    if not workdir:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vae_lib.distributed",
        description="Train the VAE in several processes joined by jax.distributed, and compare with one device.",
    )
    p.add_argument("--processes", type=int, default=2, help="number of processes (default 2)")
    p.add_argument("--devices-per-process", type=int, default=2, help="simulated CPU devices per process (default 2)")
    p.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    p.add_argument("--batch-size", type=int, default=128, help="the global batch, split over all devices (default 128)")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0's coordinator (default 127.0.0.1:free)")
    p.add_argument("--process-ids", default=None, help="comma-separated processes to run here (default: all)")
    p.add_argument("--no-compare", action="store_true", help="skip the one-device run and the comparison")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the run is stopped (default 600)")
    p.add_argument("--workdir", default=None, help="keep logs and parameter files in this folder")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one worker
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-every", type=int, default=0, help="log the loss every N steps (default: ten times per run)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m vae_lib.distributed ...``: 0 when the run succeeded, 1 when it failed."""
    args = _parser().parse_args(argv)
    if args.worker is not None:
        run_worker(
            args.worker,
            args.processes,
            args.devices_per_process,
            args.steps,
            args.out,
            coordinator=args.coordinator,
            batch_size=args.batch_size,
            log_every=args.log_every,
            init_timeout=int(min(args.timeout, 300)),
        )
        return 0
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` stops the workers too
    try:
        ids = None if args.process_ids is None else [int(i) for i in args.process_ids.split(",")]
        result = launch(
            args.processes,
            args.devices_per_process,
            args.steps,
            batch_size=args.batch_size,
            coordinator=args.coordinator,
            process_ids=ids,
            compare_single=not args.no_compare,
            log_every=args.log_every,
            timeout=args.timeout,
            workdir=args.workdir,
            echo=lambda line: print(line, flush=True),
        )
    except (LaunchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
