"""Write the lecture path of each notebook: only the cells tagged `lecture`, outputs kept.

    python tools/lecture_path.py notebooks/[0-9][0-9]*_*.ipynb          (what `make lecture` runs)

Every notebook of the series tags the cells of a 75-minute lecture with the cell tag
`lecture`; the other cells are for self-study. This writes, for each notebook given, a copy
holding only the tagged cells, in order and with their stored outputs, under
build/lecture/ (ignored by git). A lecturer opens those in JupyterLab and presents them;
students keep the full notebooks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_copies as nc  # noqa: E402

REPO = nc.REPO
TAG = "lecture"


def lecture_cells(nb: nbformat.NotebookNode) -> list:
    """The cells of `nb` tagged `lecture`, in order."""
    return [c for c in nb.cells if TAG in c.get("metadata", {}).get("tags", [])]


def write_lecture(path: Path, out_dir: Path) -> Path:
    """Write the lecture path of the notebook at `path` into `out_dir`; return the new file."""
    nb = nbformat.read(path, as_version=4)
    cells = lecture_cells(nb)
    if not cells:
        raise SystemExit(f"{path.name} has no cell tagged {TAG!r}: nothing to write.")
    lecture = nbformat.v4.new_notebook(metadata=nb.metadata, cells=cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    nbformat.write(lecture, target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = nc.parse_args(__doc__, "lecture", argv)
    for path in args.notebooks:
        target = write_lecture(path, args.out)
        n = len(lecture_cells(nbformat.read(target, as_version=4)))
        print(f"{nc.shown(target)}: {n} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
