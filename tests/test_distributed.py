"""python -m vae_lib.distributed: processes over loopback train what one process trains, and failures end the run.

The process tests start real worker processes (each imports JAX and compiles the step: tens
of seconds on two cores), so they are marked slow. Every wait is bounded, and the launcher is
started in a session of its own that the test kills as a whole if anything goes wrong, so a
failing test cannot leave processes behind or hang.
"""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from vae_lib import distributed

REPO = Path(__file__).resolve().parents[1]


class Launcher:
    """``python -m vae_lib.distributed ARGS`` in its own session, its output read line by line."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vae_lib.distributed", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line of output containing ``text``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.process.poll() is None, f"the launcher ended early:\n{self.output()}"
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} after {timeout} s:\n{self.output()}")

    def worker_pids(self) -> dict[str, int]:
        return {line.split(":")[0]: int(line.split("pid ")[1]) for line in self.seen if ": pid " in line}

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Wait for the launcher to end: (status, everything it printed, its error output)."""
        status = self.process.wait(timeout=timeout)
        err = self.process.stderr.read()
        time.sleep(0.2)  # let the reader thread drain stdout
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return status, "\n".join(self.seen), err

    def output(self) -> str:
        return "\n".join(self.seen[-40:])

    def kill(self):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def launcher(tmp_path):
    started = []

    def start(*args):
        started.append(Launcher(*args, "--workdir", str(tmp_path / f"run{len(started)}")))
        return started[-1]

    yield start
    for run in started:  # whatever happened, nothing the test started survives it
        run.kill()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _all_gone(pids, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------ refused before anything starts
def test_a_coordinator_port_that_is_taken_is_refused_before_any_process_starts(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = distributed.main(["--processes", "2", "--steps", "1", "--coordinator", f"127.0.0.1:{port}"])
    assert status == 1
    err = capsys.readouterr().err
    assert f"the coordinator cannot bind to 127.0.0.1:{port}" in err and "choose a free one" in err


def test_a_batch_that_does_not_split_over_all_devices_is_refused(capsys):
    assert distributed.main(["--processes", "3", "--devices-per-process", "1", "--batch-size", "128"]) == 1
    assert "pass a multiple of 3" in capsys.readouterr().err


def test_a_malformed_coordinator_address_is_refused(capsys):
    assert distributed.main(["--processes", "2", "--coordinator", "localhost"]) == 1
    assert "HOST:PORT" in capsys.readouterr().err


# ------------------------------------------------------------------ real processes
@pytest.mark.slow
def test_two_processes_over_loopback_match_one_process(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "2", "--steps", "10", "--timeout", "400")
    status, out, err = run.finish(timeout=450)
    assert status == 0, f"{out}\n{err}"
    result = json.loads(out.splitlines()[-1])
    assert (result["processes"], result["devices"], result["steps"]) == (2, 4, 10)
    assert result["matches_single_process"] is True, result
    assert result["max_abs_diff"] <= distributed.TOLERANCE
    assert "[process 1] process 1 of 2: 2 local devices of 4" in out


@pytest.mark.slow
def test_a_process_killed_mid_run_makes_the_launcher_fail_fast_naming_it(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "1", "--steps", "100000", "--log-every", "1")
    run.wait_for("[process 1] step", timeout=300)  # process 1 is training
    pids = run.worker_pids()
    os.kill(pids["process 1"], signal.SIGKILL)
    status, out, err = run.finish(timeout=60)  # not the 600 s of the run's own timeout
    assert status == 1
    assert f"process 1 (pid {pids['process 1']}) was killed by SIGKILL" in err
    assert "the other processes were stopped" in err and "Last lines of its log" in err
    assert _all_gone(pids.values(), timeout=10), pids


@pytest.mark.slow
def test_a_run_past_its_timeout_is_stopped_with_a_message(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "1", "--steps", "1000000", "--timeout", "20")
    run.wait_for("process 1: pid", timeout=30)
    status, _, err = run.finish(timeout=80)
    assert status == 1 and "the run took longer than 20 s" in err
    assert _all_gone(run.worker_pids().values(), timeout=10)


@pytest.mark.slow
def test_killing_the_launcher_ends_its_workers(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "1", "--steps", "1000000", "--log-every", "1")
    run.wait_for("[process 0] step", timeout=300)
    pids = run.worker_pids()
    os.kill(run.process.pid, signal.SIGKILL)  # the launcher cannot clean up: the kernel tells the workers
    assert _all_gone(pids.values(), timeout=30), pids
