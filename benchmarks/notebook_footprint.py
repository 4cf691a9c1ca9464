"""Run every notebook in a fresh kernel and report its wall time and the kernel's peak memory.

    python benchmarks/notebook_footprint.py            # all notebooks, all cores and one core
    python benchmarks/notebook_footprint.py NB.ipynb   # some notebooks

For each notebook: wall time on the machine's cores, wall time with the kernel pinned to
one core (`taskset -c 0`: Binder often gives one), and the kernel process's peak resident
memory (VmHWM from /proc, read from the kernel itself before it shuts down; the runner and
the Jupyter server are not counted). Prints a Markdown table, then one JSON line per
notebook: {"notebook", "seconds", "seconds_one_core", "peak_rss_mb"}. The stored notebooks
are not modified. Binder's budget: 1 GB of memory per session.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmHWM not found")


def run_one(path: Path) -> dict:
    """Execute one notebook in a fresh kernel; return seconds and the kernel's peak RSS."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    km.start_kernel(cwd=str(path.parent), env=env)
    try:
        client = NotebookClient(nb, km=km, timeout=1800, resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        seconds = time.perf_counter() - start
        peak = _peak_rss_mb(km.provisioner.process.pid)
    finally:
        km.shutdown_kernel(now=True)
    return {"notebook": path.name, "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--single", action="store_true", help="internal: run the given notebooks, print JSON")
    args = parser.parse_args()
    paths = [Path(p).resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
    if args.single:
        for p in paths:
            print(json.dumps(run_one(p)), flush=True)
        return 0
    taskset = shutil.which("taskset")
    rows = []
    for p in paths:
        row = run_one(p)
        if taskset:
            out = subprocess.run(
                [taskset, "-c", "0", sys.executable, __file__, "--single", str(p)],
                capture_output=True,
                text=True,
                check=True,
            )
            one = json.loads(out.stdout.strip().splitlines()[-1])
            row["seconds_one_core"] = one["seconds"]
            row["peak_rss_mb"] = max(row["peak_rss_mb"], one["peak_rss_mb"])
        else:
            row["seconds_one_core"] = None
        rows.append({k: row[k] for k in ("notebook", "seconds", "seconds_one_core", "peak_rss_mb")})
        print(f"done {p.name}", file=sys.stderr, flush=True)
    print(f"| notebook | seconds ({os.cpu_count()} cores) | seconds (1 core) | peak kernel RSS (MB) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['notebook']} | {r['seconds']} | {r['seconds_one_core']} | {r['peak_rss_mb']} |")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
