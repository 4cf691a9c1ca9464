"""tools/binder.py's pieces: what it copies, the numerics it sets, and that its limits bite.

(`make test-portable` runs the notebooks with it; tests/test_environment.py checks the environment it builds.)
"""

import subprocess
import sys

import pytest
from helpers import load_script

binder = load_script("tools/binder.py")


def test_numerics_are_another_machines_on_each_architecture():
    assert binder.numerics_env("x86_64") == {
        "XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2",
        "OPENBLAS_CORETYPE": "Prescott",
    }
    assert binder.numerics_env("aarch64") == {"XLA_FLAGS": "--xla_cpu_max_isa=NEON"}


def test_the_copy_holds_what_git_tracks_or_would_track_and_nothing_ignored(tmp_path):
    src = tmp_path / "src"
    (src / "build").mkdir(parents=True)
    (src / ".gitignore").write_text("build/\n*.log\n")
    (src / "tracked.py").write_text("x = 1\n")
    (src / "build" / "output.txt").write_text("built\n")
    (src / "run.log").write_text("log\n")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "add", ".gitignore", "tracked.py"], check=True)
    (src / "new.py").write_text("y = 2\n")  # not yet added: repo2docker copies it too
    assert binder.copy_repository(src, tmp_path / "copy") == 3
    copied = sorted(p.name for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert copied == [".gitignore", "new.py", "tracked.py"]


def test_the_memory_cgroup_kills_what_goes_over_its_limit():
    cgroup, why = binder.MemoryCgroup.create(64 * 2**20)
    if cgroup is None:
        pytest.skip(why)
    grab = "import sys; b = bytearray(int(sys.argv[1]) * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ok')"
    try:
        small = subprocess.run([sys.executable, "-c", grab, "8"], preexec_fn=cgroup.join, capture_output=True)
        assert small.returncode == 0 and b"ok" in small.stdout
        assert cgroup.read("memory.max_usage_in_bytes") > 8 * 2**20
        big = subprocess.run([sys.executable, "-c", grab, "256"], preexec_fn=cgroup.join, capture_output=True)
        assert big.returncode < 0 and b"ok" not in big.stdout, "256 MB fit in a 64 MB cgroup"
        assert cgroup.oom_kills() == 1
    finally:
        cgroup.remove()


def test_offline_means_loopback_only_and_loopback_works():
    prefix, why = binder.network_prefix()
    if not prefix:
        pytest.skip(why)
    links = subprocess.run([*prefix, "ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    echo = (
        "import socket; s = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(s.getsockname());"
        "a, _ = s.accept(); c.sendall(b'hi'); print(a.recv(2).decode())"
    )
    out = subprocess.run([*prefix, sys.executable, "-c", echo], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hi"
