"""``python -m vae_lib.cli.launch``: start the processes of a distributed run, watch them, compare.

    python -m vae_lib.cli.launch --processes 2 --devices-per-process 2 --steps 20

starts 2 worker processes on this machine, each with 2 simulated CPU devices, joined by
``jax.distributed`` (a coordinator on 127.0.0.1 at a free port; CPU collectives through gloo)
into one mesh of 4 devices (:func:`vae_lib.distributed.run_worker`). Together they train the
784-400-20 VAE for 20 steps on Fashion-MNIST, each global batch of 128 split over the 4
devices, each process feeding only its own rows. At the same time a third process trains the
same steps alone on one device. The launcher streams every process's log, prefixed with its
name, and prints one JSON line last::

    {"processes": 2, "devices": 4, "steps": 20, "matches_single_process": true,
     "first_step_max_abs_diff": 4.0e-07, "final_max_abs_diff": 8.8e-06,
     "loss_max_rel_diff": 1.0e-07, "tolerance": 0.0001, "loss_rtol": 0.01,
     "final_loss": 370.494, "seconds": 26.1, "worker_cpu_s": 24.0, "worker_peak_mb": 520}

The runs match when the parameters after the *first* step differ by at most
:data:`~vae_lib.distributed.TOLERANCE` (a tenth of one Adam step) and the loss of each of the
first :data:`~vae_lib.distributed.LOSS_STEPS` steps by at most
:data:`~vae_lib.distributed.LOSS_RTOL` relative. Later parameters are reported
(``final_max_abs_diff``) but not held to a tolerance: splitting a sum over devices changes the
order of float additions, and training amplifies such rounding differences step by step
(measured: 4e-7 after one step, 4e-3 after 60, 1.9e-2 after 100, 9e-2 after 400, while the
losses stayed within 1e-3 of each other over 100 steps and 3e-3 over 400). When they do not
match, the launcher exits with status 1.

Failures end the run with status 1, naming the process and printing its last log lines: a
process that exits with an error or is killed; a process that writes nothing, not even the
heartbeat its worker writes every second from a thread, for ``--stall-timeout`` seconds (20: a
stopped process, or one stuck holding the interpreter lock; one waiting in a collective keeps
beating, and ``--timeout`` or JAX's own heartbeat, about 100 s, ends that); a run longer than
``--timeout``. Ctrl-C stops every process and names the folder with their logs (status 130).
Bad arguments are refused before any process starts (status 2). The workers run in a process
group of their own, which the launcher ends as a whole, and each one is told by the kernel to
stop if the launcher itself dies. The launcher watches only the processes of its own machine.

**Across machines**: give every machine the coordinator's address (a port on the machine that
runs process 0) and the processes it runs; ``--real-devices`` uses each machine's GPUs or TPUs
instead of simulated CPU devices (then there is no one-device comparison). On machine A::

    python -m vae_lib.cli.launch --processes 2 --real-devices --steps 100 \\
        --coordinator machine-a:12355 --process-ids 0

and on machine B the same with ``--process-ids 1``. What must hold: every machine has the same
checkout, environment and data (``make data``); ``machine-a`` resolves on machine B (or give an
address); each machine's own host name resolves, on that machine, to the address the others
reach it at (gloo announces it, and JAX has no setting to choose it: a stock Debian/Ubuntu
``/etc/hosts`` maps the host name to 127.0.1.1, so put the host name on the network address
there); the coordinator's port on machine A and the TCP ports gloo picks at random are open
between the machines (a private network without a firewall). On GPUs the collectives go through
NCCL instead, with network settings of its own (``NCCL_SOCKET_IFNAME``). On Cloud TPU VMs,
under SLURM or Open MPI, a worker can join with ``jax.distributed.initialize()`` and no
coordinator (:func:`vae_lib.distributed.join`); this launcher always names one. tests/ checks
the two-machine path on one machine: two network namespaces joined by a veth pair, each with
its own host name and hosts file, one process in each.
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

from vae_lib.distributed import LOSS_RTOL, TOLERANCE, compare, run_worker, split_address

__all__ = ["STALL_TIMEOUT", "Interrupted", "LaunchError", "free_port", "launch", "main"]

_LAST_LINES = 15
#: Seconds without a line from a worker (it writes a heartbeat every second) before the run is
#: stopped and that worker named.
STALL_TIMEOUT = 20.0


class LaunchError(RuntimeError):
    """A worker failed or hung, the run timed out, or the coordinator cannot be reached or bound."""


class Interrupted(LaunchError):
    """The launcher was interrupted (Ctrl-C); every worker has been stopped."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen
    log_path: Path
    read: int = 0
    partial: str = ""
    lines: list[str] = field(default_factory=list)
    heard: float = field(default_factory=time.monotonic)  # when its last line came
    step: int = 0  # the last step its heartbeat reported


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_can_bind(address: str) -> None:
    """Fail now, with a clear message, if the coordinator's port on this machine is taken."""
    host, port = split_address(address)
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
            [sys.executable, "-m", "vae_lib.cli.launch", *argv],
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
    if complete:
        child.heard = time.monotonic()
    for line in complete:
        if line.startswith("heartbeat step "):  # proof of life: counted, not shown
            child.step = int(line.rpartition(" ")[2])
            continue
        child.lines.append(line)
        echo(f"[{child.name}] {line}")


def _state(pid: int) -> str:
    """The kernel's one-letter state of a process (T: stopped), or "?"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "?"


def _stalled(silent: list[_Child], folder: Path, stall_timeout: float) -> LaunchError:
    named = []
    for c in silent:
        stopped = ", stopped by a signal" if _state(c.process.pid) == "T" else ""
        named.append(f"{c.name} (pid {c.process.pid}, after step {c.step}{stopped})")
    tail = "\n".join("    " + line for line in silent[0].lines[-_LAST_LINES:] if line) or "    (empty)"
    return LaunchError(
        f"{'; '.join(named)} wrote nothing for {stall_timeout:g} s, not even its heartbeat: it hangs. "
        f"The other processes were stopped. Last lines of {silent[0].name}'s log (all logs in {folder}):\n{tail}"
    )


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


def launch(
    processes: int,
    devices_per_process: int | None,
    steps: int,
    *,
    batch_size: int = 128,
    coordinator: str | None = None,
    process_ids: list[int] | None = None,
    compare_single: bool = True,
    log_every: int = 0,
    timeout: float = 600.0,
    stall_timeout: float = STALL_TIMEOUT,
    workdir: str | os.PathLike | None = None,
    echo=print,
) -> dict:
    """Run the workers on this machine, watch them, and compare with one process on one device.

    Args:
        processes, devices_per_process, steps, batch_size: the run (see the module docstring);
            ``devices_per_process=None`` uses each machine's real devices (then no comparison
            with one device is made: it would run on other hardware).
        coordinator: ``host:port``; by default 127.0.0.1 at a free port.
        process_ids: which of the processes run here (default: all of them).
        compare_single: also train on one device in one process, and compare (process 0 only).
        log_every: the workers log the loss every this many steps (0: ten times per run).
        timeout: seconds before the run counts as too slow: everything is stopped.
        stall_timeout: seconds without any line (a worker writes a heartbeat every second)
            before that worker counts as hung: everything is stopped and it is named.
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
    sizes = {"processes": processes, "devices_per_process": devices_per_process or 1, "steps": steps}
    for name, value in {**sizes, "batch_size": batch_size}.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}.")
    total = processes * devices_per_process if devices_per_process else None
    if total and batch_size % total:
        raise ValueError(
            f"the batch of {batch_size} must split evenly over {total} devices: pass a multiple of {total}."
        )
    compare_single = compare_single and devices_per_process is not None
    ids = list(range(processes)) if process_ids is None else sorted(set(process_ids))
    if not ids or not all(0 <= i < processes for i in ids):
        raise ValueError(f"process ids must lie in 0..{processes - 1}; got {process_ids}.")
    coordinator = coordinator or f"127.0.0.1:{free_port()}"
    if processes > 1 and 0 in ids:
        _check_can_bind(coordinator)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vae_lib_distributed_"))
    folder.mkdir(parents=True, exist_ok=True)
    devices = ["--devices-per-process", str(devices_per_process)] if devices_per_process else ["--real-devices"]
    common = ["--steps", str(steps), "--batch-size", str(batch_size), "--log-every", str(log_every)]
    runs = [
        (f"process {i}", ["--worker", str(i), "--processes", str(processes), "--coordinator", coordinator, *devices])
        for i in ids
    ]
    if compare_single and 0 in ids:
        runs.append(("one device", ["--worker", "0", "--processes", "1", "--devices-per-process", "1"]))
    runs = [(name, [*argv, *common]) for name, argv in runs]
    each = f"{devices_per_process} simulated CPU devices" if devices_per_process else "its real devices"
    echo(f"launching {len(ids)} of {processes} processes, each with {each}, coordinator {coordinator}")
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
            now = time.monotonic()
            silent = [c for c in children if c.process.returncode is None and now - c.heard > stall_timeout]
            if silent:
                raise _stalled(sorted(silent, key=lambda c: c.heard), folder, stall_timeout)
            if time.monotonic() - start > timeout:
                running = [c.name for c in children if c.process.returncode is None]
                raise LaunchError(
                    f"the run took longer than {timeout:g} s; stopped {', '.join(running)} (logs in {folder})."
                )
            time.sleep(0.05)
    except KeyboardInterrupt:
        if children:
            _stop(children)
        raise Interrupted(f"interrupted: stopped {len(children)} processes; their logs are in {folder}.") from None
    except BaseException:
        if children:
            _stop(children)
        raise
    import numpy as np

    result = {"processes": processes, "devices": total, "steps": steps, "matches_single_process": None}
    if 0 in ids and compare_single:
        diff = compare(folder / "process_0.npz", folder / "one_device.npz")
        holds = diff["first_step_max_abs_diff"] <= TOLERANCE and diff["loss_max_rel_diff"] <= LOSS_RTOL
        result.update(matches_single_process=holds, **diff, tolerance=TOLERANCE, loss_rtol=LOSS_RTOL)
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


def _at_least(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _ids(text: str) -> list[int]:
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected process numbers separated by commas (e.g. 0,1), got {text!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vae_lib.cli.launch",
        description="Train the VAE in several processes joined by jax.distributed, and compare with one device.",
    )
    p.add_argument("--processes", type=_at_least(1), default=2, help="number of processes (default 2)")
    devices = p.add_mutually_exclusive_group()
    devices.add_argument(
        "--devices-per-process", type=_at_least(1), default=2, help="simulated CPU devices per process (default 2)"
    )
    devices.add_argument(
        "--real-devices", action="store_true", help="use each machine's own devices (GPUs, TPUs); no comparison"
    )
    p.add_argument("--steps", type=_at_least(1), default=20, help="training steps (default 20)")
    p.add_argument("--batch-size", type=_at_least(1), default=128, help="the global batch, split over all devices")
    p.add_argument("--coordinator", type=_address, default=None, help="HOST:PORT of process 0's coordinator")
    p.add_argument(
        "--process-ids", type=_ids, default=None, help="comma-separated processes to run here (default: all)"
    )
    p.add_argument("--no-compare", action="store_true", help="skip the one-device run and the comparison")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the run is stopped (default 600)")
    p.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT, help="seconds of silence that mean a hang")
    p.add_argument("--workdir", default=None, help="keep logs and parameter files in this folder")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one worker
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-every", type=_at_least(0), default=0, help="log the loss every N steps (default: 10 times)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m vae_lib.cli.launch ...``: 0 when the run succeeded, 1 when it failed."""
    args = _parser().parse_args(argv)  # bad arguments end here, before any process starts (exit status 2)
    devices_per_process = None if args.real_devices else args.devices_per_process
    if args.worker is not None:
        run_worker(
            args.worker,
            args.processes,
            devices_per_process,
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
        result = launch(
            args.processes,
            devices_per_process,
            args.steps,
            batch_size=args.batch_size,
            coordinator=args.coordinator,
            process_ids=args.process_ids,
            compare_single=not args.no_compare,
            log_every=args.log_every,
            timeout=args.timeout,
            stall_timeout=args.stall_timeout,
            workdir=args.workdir,
            echo=lambda line: print(line, flush=True),
        )
    except (LaunchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 130 if isinstance(e, Interrupted) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps(result), flush=True)
    if result["matches_single_process"] is False:
        print(
            f"error: the distributed run does not match one device: parameters after the first step differ by up "
            f"to {result['first_step_max_abs_diff']:.2g} (tolerance {TOLERANCE:g}), losses by up to "
            f"{result['loss_max_rel_diff']:.2g} relative (tolerance {LOSS_RTOL:g}).",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
