"""Execute notebooks in place, top to bottom in a fresh kernel, so that a second run changes nothing.

    python tools/run_notebook.py notebooks/01_autoencoder.ipynb ...   # what `make run` does
    python tools/run_notebook.py --timings notebooks/04_jit_training.ipynb

What makes two runs on one machine store the same file:
- no execution timestamps in cell metadata, and no widget state in the notebook's metadata
  (a progress bar's final state holds its elapsed time); a widget output keeps its plain-text
  form, which is what a static view of the notebook shows;
- widget model ids (random on every run) are replaced by ids derived from the notebook's name
  and the order in which they appear;
- cells tagged `timings` print wall-clock measurements, which no two runs share. Their outputs
  are kept from the stored notebook when the cell's code is unchanged; `--timings`
  (`make run TIMINGS=1`) measures them again.
Training and sampling numbers need none of this: on one machine they come out bit for bit
the same in every run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import uuid
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def _source(cell) -> str:
    return cell.get("source", "")


def keep_timings(new, old) -> int:
    """Copy outputs of unchanged `timings` cells from the old notebook; return how many."""
    stored = {_source(c): c for c in old.cells if "timings" in c.get("metadata", {}).get("tags", [])}
    kept = 0
    for cell in new.cells:
        if "timings" in cell.get("metadata", {}).get("tags", []) and _source(cell) in stored:
            cell["outputs"] = copy.deepcopy(stored[_source(cell)]["outputs"])
            kept += 1
    return kept


def stable_widget_ids(nb, name: str) -> None:
    """Replace each widget model id with one derived from the notebook name and its order."""
    mapping: dict[str, str] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view and view.get("model_id") and view["model_id"] not in mapping:
                mapping[view["model_id"]] = uuid.uuid5(uuid.NAMESPACE_URL, f"{name}#{len(mapping)}").hex
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view and view.get("model_id") in mapping:
                view["model_id"] = mapping[view["model_id"]]


def run(path: Path, timings: bool) -> None:
    nb = nbformat.read(path, as_version=4)
    old = copy.deepcopy(nb)
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        record_timing=False,
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # (nbclient needs the widget state while it runs; it is dropped below)
    kept = 0 if timings else keep_timings(nb, old)
    stable_widget_ids(nb, path.name)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, path)
    note = f" ({kept} timing cell(s) kept from the stored run; TIMINGS=1 measures them again)" if kept else ""
    print(f"{path}: executed{note}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timings", action="store_true", help="measure the cells tagged `timings` again")
    args = parser.parse_args()
    for path in args.notebooks:
        run(path, args.timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
