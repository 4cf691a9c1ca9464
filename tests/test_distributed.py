"""vae_lib.distributed (each worker) and python -m vae_lib.cli.launch (the launcher): processes over loopback
train what one process trains, and failures end the run.

The process tests start real worker processes (each imports JAX and compiles the step: tens
of seconds on two cores), so they are marked slow. Every wait is bounded, and the launcher is
started in a session of its own that the test kills as a whole if anything goes wrong, so a
failing test cannot leave processes behind or hang.
"""

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from vae_lib import distributed
from vae_lib.cli import launch

REPO = Path(__file__).resolve().parents[1]


# ``python -m vae_lib.cli.launch``, with Ctrl-C (SIGINT) handled as in a terminal's foreground job even when the tests
# run in a background job of a non-interactive shell, which starts every command with SIGINT ignored.
_LAUNCH_WITH_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('vae_lib.cli.launch', run_name='__main__', alter_sys=True)"
)


class Launcher:
    """``python -m vae_lib.cli.launch ARGS`` in its own session, its output read line by line."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH_WITH_CTRL_C, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        # stderr is drained as it comes too: a full pipe would block the launcher before it can exit
        self._err_reader = threading.Thread(target=lambda: self.errors.extend(self.process.stderr), daemon=True)
        self._err_reader.start()

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
        self._err_reader.join(timeout=10)
        err = "".join(self.errors)
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


# ------------------------------------------------------------------ the worker's helpers
def test_split_address_reads_host_and_port():
    assert distributed.split_address("127.0.0.1:12355") == ("127.0.0.1", 12355)
    assert distributed.split_address("[::1]:80") == ("::1", 80)


@pytest.mark.parametrize("address", ["localhost", ":80", "host:port", "host:0", "host:70000", None])
def test_split_address_refuses_anything_but_host_colon_port_with_an_example(address):
    with pytest.raises(ValueError, match=r"HOST:PORT with a port from 1 to 65535 \(for example 127\.0\.0\.1:12355\)"):
        distributed.split_address(address)


def _worker_file(path, losses, first, final):
    """A file as run_worker writes it: the losses, the parameters after step 1 and at the end."""
    arrays = {"first_param" + k: v for k, v in first.items()} | {"param" + k: v for k, v in final.items()}
    np.savez(path, losses=np.asarray(losses), **arrays)
    return path


def test_compare_measures_the_first_step_the_final_parameters_and_the_losses(tmp_path):
    a = _worker_file(tmp_path / "a.npz", [10.0, 8.0], {"w": np.array([1.0, 2.0])}, {"w": np.array([3.0, 4.0])})
    b = _worker_file(tmp_path / "b.npz", [10.0, 10.0], {"w": np.array([1.0, 2.5])}, {"w": np.array([3.0, 3.0])})
    assert distributed.compare(a, b) == pytest.approx(
        {"first_step_max_abs_diff": 0.5, "final_max_abs_diff": 1.0, "loss_max_rel_diff": 0.2}
    )


def test_compare_refuses_files_that_hold_different_arrays(tmp_path):
    a = _worker_file(tmp_path / "a.npz", [1.0], {"w": np.ones(2)}, {"w": np.ones(2)})
    b = _worker_file(tmp_path / "b.npz", [1.0], {"v": np.ones(2)}, {"v": np.ones(2)})
    with pytest.raises(ValueError, match="hold different arrays"):
        distributed.compare(a, b)


# ------------------------------------------------------------------ the launcher: refused before anything starts
def test_a_coordinator_port_that_is_taken_is_refused_before_any_process_starts(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = launch.main(["--processes", "2", "--steps", "1", "--coordinator", f"127.0.0.1:{port}"])
    assert status == 1
    err = capsys.readouterr().err
    assert f"the coordinator cannot bind to 127.0.0.1:{port}" in err and "choose a free one" in err


def test_a_batch_that_does_not_split_over_all_devices_is_refused(capsys):
    assert launch.main(["--processes", "3", "--devices-per-process", "1", "--batch-size", "128"]) == 1
    assert "pass a multiple of 3" in capsys.readouterr().err


def test_a_malformed_coordinator_address_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["--processes", "2", "--coordinator", "localhost"])
    assert exit_info.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--coordinator", "host:99999"], "a port from 1 to 65535"),
        (["--batch-size", "0"], "must be at least 1, got 0"),
        (["--batch-size", "-2"], "must be at least 1, got -2"),
        (["--process-ids", "a,b"], "numbers separated by commas"),
        (["--steps", "x"], "expected a whole number"),
    ],
)
def test_bad_arguments_are_refused_before_any_process_starts(args, message, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: started.append(a))
    with pytest.raises(SystemExit) as exit_:
        launch.main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert started == []


def test_a_comparison_that_fails_makes_the_launcher_exit_with_status_1(capsys, monkeypatch):
    failed = {"processes": 2, "devices": 4, "steps": 5, "matches_single_process": False,
              "first_step_max_abs_diff": 3e-3, "final_max_abs_diff": 3e-2, "loss_max_rel_diff": 0.2}  # fmt: skip
    monkeypatch.setattr(launch, "launch", lambda *a, **k: failed)
    assert launch.main(["--steps", "5"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[-1]) == failed  # the result line is still printed
    assert "does not match one device" in err and "0.003" in err


# ------------------------------------------------------------------ real processes
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


@pytest.mark.slow
def test_a_hundred_steps_match_one_device_though_the_parameters_drift(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "2", "--steps", "100", "--timeout", "500")
    status, out, err = run.finish(timeout=560)
    assert status == 0, f"{out}\n{err}"
    result = json.loads(out.splitlines()[-1])
    assert result["matches_single_process"] is True, result
    assert result["first_step_max_abs_diff"] <= distributed.TOLERANCE
    assert result["loss_max_rel_diff"] <= distributed.LOSS_RTOL
    assert result["final_max_abs_diff"] > result["first_step_max_abs_diff"]  # reported, and it does drift
    assert (result["processes"], result["devices"], result["steps"]) == (2, 4, 100)
    assert "[process 1] process 1 of 2: 2 local cpu devices of 4" in out


@pytest.mark.slow
def test_a_stopped_worker_is_named_within_30_seconds(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "1", "--steps", "100000", "--log-every", "1")
    run.wait_for("[process 1] step 2/", timeout=300)
    pids = run.worker_pids()
    os.kill(pids["process 1"], signal.SIGSTOP)
    stopped_at = time.monotonic()
    status, _, err = run.finish(timeout=60)
    assert time.monotonic() - stopped_at < 30
    assert status == 1
    assert f"process 1 (pid {pids['process 1']}, after step" in err and "stopped by a signal" in err
    assert "wrote nothing for 20 s" in err
    assert _all_gone(pids.values(), timeout=10), pids


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_names_the_logs_without_a_traceback(launcher):
    run = launcher("--processes", "2", "--devices-per-process", "1", "--steps", "100000", "--log-every", "1")
    run.wait_for("[process 0] step", timeout=300)
    pids = run.worker_pids()
    os.kill(run.process.pid, signal.SIGINT)
    status, _, err = run.finish(timeout=60)
    assert status == 130
    assert "interrupted: stopped 3 processes; their logs are in" in err
    assert "Traceback" not in err
    assert _all_gone(pids.values(), timeout=10), pids


# ------------------------------------------------------------------ two machines, emulated
NAMESPACE_TOOLS = all(shutil.which(tool) for tool in ("ip", "unshare")) and os.geteuid() == 0


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair on 10.203.7.0/24, each with its own hosts file
    (``ip netns exec`` mounts /etc/netns/NAME/hosts over /etc/hosts): node-a and node-b resolve to
    their private addresses, as two machines on one network would see them."""
    names = (f"vaetest{os.getpid()}a", f"vaetest{os.getpid()}b")
    veth = (f"vt{os.getpid() % 100000}a", f"vt{os.getpid() % 100000}b")

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        for n in names:
            ip("netns", "add", n)
        ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for n, v, addr in zip(names, veth, ("10.203.7.1/24", "10.203.7.2/24"), strict=True):
            ip("link", "set", v, "netns", n)
            ip("-n", n, "addr", "add", addr, "dev", v)
            ip("-n", n, "link", "set", v, "up")
            ip("-n", n, "link", "set", "lo", "up")
            folder = Path("/etc/netns") / n
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("127.0.0.1 localhost\n10.203.7.1 node-a\n10.203.7.2 node-b\n")
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / n, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not NAMESPACE_TOOLS, reason="needs root and iproute2's ip and util-linux's unshare")
def test_two_hosts_on_a_private_network_train_together(two_hosts, tmp_path):
    common = "--processes 2 --devices-per-process 2 --steps 5 --coordinator node-a:12355 --timeout 400"
    runs = []
    for namespace, host, process in zip(two_hosts, ("node-a", "node-b"), (0, 1), strict=True):
        inner = f"hostname {host} && exec {sys.executable} -m vae_lib.cli.launch {common} --process-ids {process}"
        command = ["ip", "netns", "exec", namespace, "unshare", "--uts", "sh", "-c", inner]
        runs.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True))  # fmt: skip
    try:
        outs = [run.communicate(timeout=450)[0] for run in runs]
    finally:
        for run in runs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)
    assert [run.returncode for run in runs] == [0, 0], "\n\n".join(outs)
    first, second = (json.loads(out.strip().splitlines()[-1]) for out in outs)
    assert first["matches_single_process"] is True and first["devices"] == 4, first
    assert second["matches_single_process"] is None  # the machine without process 0 does not compare
    assert "[process 1] process 1 of 2: 2 local cpu devices of 4" in outs[1]
