"""Measure how far each number the notebooks' prose states moves from one machine to another.

    python benchmarks/claim_spread.py                       # every notebook, every setting
    python benchmarks/claim_spread.py --settings native isa-SSE4_2 --notebooks 02
    python benchmarks/claim_spread.py --summarise-only      # re-read the logs of earlier runs

Each notebook runs in a fresh kernel (`jupyter nbconvert --execute --allow-errors`, so one
failing claim does not hide the others) under each *setting*, a stand-in for another machine:

    native       this machine as it is
    isa-SSE4_2   XLA compiles for an older instruction set (no AVX): other vector widths
    isa-AVX      XLA compiles for AVX without AVX2/FMA
    one-core     the whole run pinned to one core (`taskset -c 0`): other thread splits
    openblas     NumPy's BLAS told to use another core type (OPENBLAS_CORETYPE=Prescott)
    binder       all of that at once, as `make test-portable` runs the notebooks: one core, XLA for
                 SSE4.2 (NEON on aarch64) and OpenBLAS on Prescott (x86_64), from tools/binder.py
                 (its memory limit and cut network change no number, so they are left out here)

Every `vae_lib.notebook.claims` check appends the value it computed to a log (VAE_LIB_CLAIMS_LOG).
The summary lists, per claim: the stated value and tolerance, the values under each setting,
the largest distance from the stated value, and how much of the tolerance that uses. A claim
using more than half its tolerance is flagged: widen the tolerance only if a reader would
still find the claim useful; otherwise reword it. The executed notebooks and logs are
written under build/claim_spread/ (ignored by git); the stored notebooks are not modified.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
OUT = REPO / "build" / "claim_spread"


def _binder_numerics() -> dict[str, str]:
    """The numerics of `make test-portable` (tools/binder.py), so both use one definition."""
    spec = spec_from_file_location("binder", REPO / "tools" / "binder.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.numerics_env()


SETTINGS = {
    "native": ({}, []),
    "isa-SSE4_2": ({"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"}, []),
    "isa-AVX": ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX"}, []),
    "one-core": ({}, ["taskset", "-c", "0"]),
    "openblas": ({"OPENBLAS_CORETYPE": "Prescott"}, []),
    "binder": (_binder_numerics(), ["taskset", "-c", "0"]),
}


def run_setting(name: str, notebooks: list[Path]) -> None:
    env_extra, prefix = SETTINGS[name]
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "claims.jsonl"
    for nb in notebooks:
        # drop this notebook's earlier lines from the log, keep the others
        lines = log.read_text().splitlines() if log.exists() else []
        log.write_text("".join(f"{line}\n" for line in lines if json.loads(line).get("notebook") != nb.name))
        part = folder / f"{nb.stem}.jsonl"
        part.unlink(missing_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", VAE_LIB_CLAIMS_LOG=str(part), **env_extra)
        cmd = prefix + [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--allow-errors",
            "--ExecutePreprocessor.timeout=1800",
            "--output-dir",
            str(folder),
            "--output",
            nb.name,
            str(nb),
        ]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=NOTEBOOKS, env=env, capture_output=True, text=True)
        print(f"[{name}] {nb.name}: exit {done.returncode}, {time.perf_counter() - t0:.0f} s", flush=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
        with open(log, "a") as f:
            for line in part.read_text().splitlines() if part.exists() else []:
                f.write(json.dumps(dict(json.loads(line), notebook=nb.name)) + "\n")
        part.unlink(missing_ok=True)


def summarise(settings: list[str]) -> list[dict]:
    rows: dict[tuple, dict] = {}
    for name in settings:
        log = OUT / name / "claims.jsonl"
        if not log.exists():
            continue
        for line in log.read_text().splitlines():
            r = json.loads(line)
            key = (r["notebook"], r["what"])
            row = rows.setdefault(key, {**r, "values": {}})
            row["values"][name] = r["value"]
    out = []
    print(f"{'notebook':10s} {'claim':60s} {'stated':>16s} {'min':>10s} {'max':>10s} {'used':>6s}")
    for (nb, what), r in rows.items():
        vals = list(r["values"].values())
        if r["kind"] == "expect":
            dev = max(abs(v - r["stated"]) for v in vals)
            used = dev / r["tol"] if r["tol"] else (0.0 if dev == 0 else float("inf"))
            stated = f"{r['stated']:g} ± {r['tol']:g}"
        elif r["kind"] == "between":
            half = (r["high"] - r["low"]) / 2
            mid = (r["high"] + r["low"]) / 2
            used = max(abs(v - mid) for v in vals) / half if half else 0.0
            stated = f"[{r['low']:g}, {r['high']:g}]"
        else:
            used = 0.0 if all(v == 1.0 for v in vals) else float("inf")
            stated = "holds"
        flag = "  <-- OUT" if used > 1 else ("  <-- over half" if used > 0.5 else "")
        print(f"{nb[:10]:10s} {what[:60]:60s} {stated:>16s} {min(vals):10.4g} {max(vals):10.4g} {used:6.0%}{flag}")
        out.append({"notebook": nb, "what": what, "kind": r["kind"], "values": r["values"], "used": used})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--notebooks", nargs="*", default=[], help="notebook name prefixes, e.g. 01 02")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    notebooks = sorted(
        p
        for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")
        if not args.notebooks or any(p.name.startswith(n) for n in args.notebooks)
    )
    if not args.summarise_only:
        if {"one-core", "binder"} & set(args.settings) and shutil.which("taskset") is None:
            sys.exit("taskset (util-linux) is needed for the one-core and binder settings")
        for name in args.settings:
            run_setting(name, notebooks)
    rows = summarise(args.settings)
    (OUT / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
