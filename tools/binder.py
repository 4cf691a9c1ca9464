"""Binder, emulated on this machine: its lean environment, and the notebooks run under its limits.

    python tools/binder.py build [--fresh]            # build/binder/: what repo2docker would build
    python tools/binder.py nbval [NOTEBOOK ...] [--pytest-args ARGS]   # strict nbval there, Binder's limits
    python tools/binder.py limits                      # say which limits this machine can apply

repo2docker cannot run here (no Docker daemon), so `build` does what it does with binder/: a copy of the
repository (the files git tracks or would track, so build/, .venv/ and artifacts/ stay out) in
build/binder/repo, a fresh Python 3.11 venv (binder/runtime.txt) with `pip install -r binder/requirements.txt`,
then binder/postBuild run inside the copy with that venv first on PATH and a home of its own
(build/binder/home). The system's dataset-fashion-mnist stands for binder/apt.txt. A Jupyter kernelspec
"binder" (in build/binder/jupyter, found through JUPYTER_PATH) starts kernels with that venv's Python.
The venv is rebuilt when binder/requirements.txt or runtime.txt change (or with --fresh); the copy and
postBuild are redone on every build, so the notebooks always run today's files.

`nbval` runs strict nbval over each notebook of the copy, one pytest at a time (pytest and nbval come from
the calling environment, the kernel from the Binder venv), under what a Binder session gets and with the
numerics of another machine:

- one core: `taskset -c 0`;
- 2 GiB of memory for everything (pytest, the kernel, and the processes the kernel starts, such as
  notebook 07's jax.distributed workers): a cgroup v1 memory cgroup with memory.limit_in_bytes = 2 GiB,
  created under this process's own memory cgroup; above the limit the kernel is killed, as on Binder;
- no network: `unshare -n`, with loopback brought up (the kernel talks to pytest over it);
- XLA compiling for an older instruction set (XLA_FLAGS=--xla_cpu_max_isa=SSE4_2; NEON on aarch64) and
  OpenBLAS using another core type (OPENBLAS_CORETYPE=Prescott, x86_64 only).

A limit the machine cannot apply (not root, no cgroup v1 memory controller, no `unshare`) is reported
and skipped; the run goes on with the others. Each notebook's peak memory is the cgroup's
memory.max_usage_in_bytes, reset before the notebook starts (it counts page cache the run adds, as
Binder's limit does; the kernel reclaims cache before it kills), and the peak of what is not page cache
(memory.stat's total_rss, sampled every 0.2 s). The table is printed at the end and written to
build/binder/nbval.jsonl.
Exit status: 0 when every notebook passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / "build" / "binder"
KERNEL_NAME = "binder"
MEMORY_LIMIT = 2 * 1024**3  # mybinder.org: 1 GB guaranteed, the kernel is restarted above 2 GB
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
# The notebooks' own environment needs none of these; they would point the copy at the calling venv.
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR")


def numerics_env(machine: str | None = None) -> dict[str, str]:
    """Another machine's numerics: XLA limited to an older instruction set, OpenBLAS on an old core type."""
    machine = machine or platform.machine()
    env = {"XLA_FLAGS": "--xla_cpu_max_isa=" + ("NEON" if machine in ("aarch64", "arm64") else "SSE4_2")}
    if machine == "x86_64":
        env["OPENBLAS_CORETYPE"] = "Prescott"
    return env


def _say(*parts) -> None:
    print("[binder]", *parts, flush=True)


def _run(cmd, **kw) -> None:
    subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------------------------- build


def _source_files(repo: Path) -> list[str]:
    """The repository's files as repo2docker would copy them: tracked or not ignored, and present."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (repo / f).is_file()})


def copy_repository(repo: Path, dest: Path) -> int:
    if dest.exists():
        shutil.rmtree(dest)
    files = _source_files(repo)
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / f, target)
    return len(files)


def _python_311() -> str:
    """binder/runtime.txt asks for Python 3.11."""
    wanted = (REPO / "binder" / "runtime.txt").read_text().strip()
    version = wanted.removeprefix("python-")
    if sys.version.startswith(version + "."):
        return sys.executable
    found = shutil.which(f"python{version}")
    if not found:
        sys.exit(f"binder/runtime.txt asks for {wanted}: no python{version} on PATH")
    return found


def _env_key(dest_repo: Path) -> str:
    h = hashlib.sha256()
    for name in ("requirements.txt", "runtime.txt"):
        h.update((dest_repo / "binder" / name).read_bytes())
    return h.hexdigest()[:16]


def clean_env(base: Path) -> dict[str, str]:
    """The environment a Binder session's processes see: the Binder venv first, its own home."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(
        PATH=f"{base / 'venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        HOME=str(base / "home"),
        JUPYTER_PATH=str(base / "jupyter"),
        PYTHONNOUSERSITE="1",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def build(base: Path, fresh: bool = False) -> dict:
    """Copy the repository, (re)build the venv from binder/ when needed, run postBuild, add the kernelspec."""
    t0 = time.perf_counter()
    base.mkdir(parents=True, exist_ok=True)
    n = copy_repository(REPO, base / "repo")
    _say(f"copied {n} files of the repository to {base / 'repo'}")
    venv, stamp = base / "venv", base / "venv.json"
    key = _env_key(base / "repo")
    reuse = not fresh and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key
    reuse = reuse and (venv / "bin" / "python").is_file()
    env = clean_env(base)
    t_venv = time.perf_counter()
    if not reuse:
        for path in (venv, base / "home", stamp):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        _say(f"a fresh venv from binder/requirements.txt ({_python_311()})")
        _run([_python_311(), "-m", "venv", str(venv)])
        py = str(venv / "bin" / "python")
        _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], env=env)
        _run([py, "-m", "pip", "install", "-q", "-r", str(base / "repo" / "binder" / "requirements.txt")], env=env)
    else:
        _say("binder/requirements.txt and runtime.txt unchanged: the venv is reused (--fresh rebuilds it)")
    t_post = time.perf_counter()
    (base / "home").mkdir(exist_ok=True)
    _say("binder/postBuild")
    _run([str(base / "repo" / "binder" / "postBuild")], cwd=base / "repo", env=env)
    spec = base / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(
        json.dumps(
            {
                "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (Binder's environment)",
                "language": "python",
            },
            indent=1,
        )
    )
    info = {
        "key": key,
        "venv_s": round(t_post - t_venv, 1),
        "postBuild_s": round(time.perf_counter() - t_post, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "reused_venv": reuse,
    }
    stamp.write_text(json.dumps(info))
    _say(f"built in {info['total_s']} s (venv {info['venv_s']} s, postBuild {info['postBuild_s']} s)")
    return info


def index_reachable() -> bool:
    """Whether pip can reach the package index (building the venv and postBuild's install need it)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "tqdm==4.70.1"]
        return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0


def is_current(base: Path) -> bool:
    """build/binder holds a built environment for today's binder/ files."""
    stamp = base / "venv.json"
    if not (stamp.is_file() and (base / "venv" / "bin" / "python").is_file() and (base / "repo").is_dir()):
        return False
    h = hashlib.sha256()
    for name in ("requirements.txt", "runtime.txt"):
        h.update((REPO / "binder" / name).read_bytes())
    return json.loads(stamp.read_text()).get("key") == h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- limits


def _own_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return CGROUP_ROOT / path.lstrip("/")
    return None


class MemoryCgroup:
    """A cgroup v1 memory cgroup with a hard limit, created under this process's own; None if impossible."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, limit: int) -> tuple[MemoryCgroup | None, str]:
        parent = _own_memory_cgroup()
        if parent is None or not (parent / "memory.limit_in_bytes").is_file():
            return None, f"no cgroup v1 memory controller at {CGROUP_ROOT} (cgroup v2 or none)"
        path = parent / f"vae-binder-{os.getpid()}"
        try:
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(limit))
            if (path / "memory.memsw.limit_in_bytes").exists():  # swap does not get around the limit either
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError as exc:
            if path.is_dir():
                path.rmdir()
            return None, f"cannot create a memory cgroup under {parent}: {exc}"
        return cls(path), f"memory cgroup {path} with memory.limit_in_bytes = {limit}"

    def read(self, name: str) -> int:
        return int((self.path / name).read_text().split()[0])

    def reset_peak(self) -> None:
        (self.path / "memory.max_usage_in_bytes").write_text("0")

    def anon_bytes(self) -> int:
        """Memory that is not page cache (memory.stat's total_rss: anonymous pages) of everything in it, now."""
        for line in (self.path / "memory.stat").read_text().splitlines():
            if line.startswith("total_rss "):
                return int(line.split()[1])
        return 0

    def oom_kills(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def join(self) -> None:
        """In a child before exec: move this process (and so all it starts) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        for _ in range(50):
            pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:  # only processes this run started can be in it
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        try:
            self.path.rmdir()
        except OSError as exc:
            _say(f"note: could not remove {self.path}: {exc}")


def network_prefix() -> tuple[list[str], str]:
    """A command prefix that runs the rest with no network but loopback, or [] and why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return [], "no unshare or ip (util-linux, iproute2): the network stays reachable"
    prefix = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode:
        return [], f"`{' '.join(prefix)}` failed ({probe.stderr.strip()}): the network stays reachable"
    return [*prefix, "sh", "-c", 'ip link set lo up && exec "$@"', "sh"], "offline: unshare -n, loopback only"


def cpu_prefix() -> tuple[list[str], str]:
    if shutil.which("taskset") is None:
        return [], "no taskset (util-linux): all cores"
    return ["taskset", "-c", "0"], "one core: taskset -c 0"


def describe_limits() -> list[str]:
    cgroup, memory_note = MemoryCgroup.create(MEMORY_LIMIT)
    if cgroup:
        cgroup.remove()
    return [memory_note, cpu_prefix()[1], network_prefix()[1], f"numerics: {numerics_env()}"]


# ---------------------------------------------------------------------------------------------- nbval


def run_notebooks(base: Path, notebooks: list[str], pytest_args: list[str]) -> int:
    repo = base / "repo"
    if not is_current(base):
        sys.exit(f"{base} holds no environment built from today's binder/: run `python tools/binder.py build`")
    cgroup, memory_note = MemoryCgroup.create(MEMORY_LIMIT)
    cpu, cpu_note = cpu_prefix()
    net, net_note = network_prefix()
    for note in (memory_note, cpu_note, net_note):
        _say(note if cgroup or note is not memory_note else f"NOTE: no memory limit: {note}")
    env = clean_env(base)
    env.update(numerics_env())
    _say("numerics:", " ".join(f"{k}={v}" for k, v in numerics_env().items()))
    rows = []
    try:
        for nb in notebooks:
            cmd = [*net, *cpu, sys.executable, "-m", "pytest", nb, "--nbval-kernel-name", KERNEL_NAME, *pytest_args]
            _say(f"{nb}: {' '.join(cmd[len(net) :])}")
            if cgroup:
                cgroup.reset_peak()
                kills = cgroup.oom_kills()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=repo, env=env, preexec_fn=cgroup.join if cgroup else None)
            anon_peak = 0
            while proc.poll() is None:  # the cgroup keeps no peak without page cache: sample it
                if cgroup:
                    anon_peak = max(anon_peak, cgroup.anon_bytes())
                time.sleep(0.2)
            done = proc
            row = {"notebook": nb, "passed": done.returncode == 0, "seconds": round(time.perf_counter() - t0, 1)}
            if cgroup:
                row["peak_mib"] = round(cgroup.read("memory.max_usage_in_bytes") / 2**20)
                row["peak_anon_mib"] = round(anon_peak / 2**20)
                row["oom_kills"] = cgroup.oom_kills() - kills
            rows.append(row)
            _say(json.dumps(row))
    finally:
        if cgroup:
            cgroup.remove()
    limits = "; ".join([memory_note if cgroup else "no memory limit", cpu_note, net_note])
    report(rows, limits)
    with open(base / "nbval.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "limits": limits, "numerics": numerics_env(), "cpu": _cpu_model()}) + "\n")
    return 0 if rows and all(r["passed"] for r in rows) else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(rows: list[dict], limits: str) -> None:
    print(f"\nStrict nbval in Binder's environment on {_cpu_model()}; {limits}")
    print("| notebook | result | seconds | peak MiB (cgroup) | of it not page cache (MiB, sampled) | OOM kills |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {Path(r['notebook']).name} | {'passed' if r['passed'] else 'FAILED'} | {r['seconds']} "
            f"| {r.get('peak_mib', '-')} | {r.get('peak_anon_mib', '-')} | {r.get('oom_kills', '-')} |"
        )
    print(f"total: {sum(r['seconds'] for r in rows):.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the environment lives (build/binder)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the environment as repo2docker would")
    b.add_argument("--fresh", action="store_true", help="rebuild the venv even if binder/ did not change")
    b.add_argument(
        "--if-online",
        action="store_true",
        help="where the build fails (offline, say), say so and exit 0 without an environment: make test runs on, "
        "and its environment test builds again (failing with the reason, or skipping where the index is unreachable)",
    )
    n = sub.add_parser("nbval", help="strict nbval over the copy's notebooks, under Binder's limits")
    n.add_argument("notebooks", nargs="*", help="notebooks/NN_name.ipynb paths (default: every numbered notebook)")
    n.add_argument("--pytest-args", default="", help="pytest's options, one string (the Makefile's NBVAL)")
    sub.add_parser("limits", help="which of Binder's limits this machine can apply")
    args = parser.parse_args()
    base = args.dir.resolve()
    if args.command == "build":
        try:
            build(base, fresh=args.fresh)
        except subprocess.CalledProcessError as exc:
            if not args.if_online:
                raise
            (base / "venv.json").unlink(missing_ok=True)
            _say(
                f"NOTE: no Binder environment (`{' '.join(map(str, exc.cmd))}` failed; offline?): the environment "
                "test builds one again and says why (or skips where the index is unreachable); make test-portable "
                "needs one"
            )
        return 0
    if args.command == "limits":
        print("\n".join(describe_limits()))
        return 0
    notebooks = args.notebooks or sorted(
        str(p.relative_to(base / "repo")) for p in (base / "repo" / "notebooks").glob("[0-9][0-9]*_*.ipynb")
    )
    return run_notebooks(base, notebooks, args.pytest_args.split())


if __name__ == "__main__":
    raise SystemExit(main())
