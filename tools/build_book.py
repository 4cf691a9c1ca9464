"""Build the static book of the executed series (what `make book` runs).

    python tools/build_book.py notebooks/[0-9][0-9]*_*.ipynb [--out build/book]

The book is Sphinx with myst-nb and sphinx-book-theme (configured in book/conf.py): each
notebook becomes a page with its stored outputs (nothing is re-executed), README.md is the
landing page, and the sidebar links the notebooks in order. Everything comes from PyPI
packages, so it builds and reads offline (README, "Read online", says why not Jupyter Book 2).

The sources are staged in build/book_src/ (ignored by git), never in notebooks/:

- index.md: README.md, with its links to notebooks/NN_name.ipynb turned into links to the
  pages, a remote badge image turned into a plain link, and a toctree of the notebooks;
- notebooks/NN_name.ipynb: copies whose widget outputs are made static and whose test rig
  (nbval's markers, the claims check cells) is taken out (tools/notebook_copies.py), whose
  links to ../README.md point at the landing page, and whose
  cells collapsed in JupyterLab (`jupyter.source_hidden`: the worked solutions) carry myst-nb's
  `hide-input` tag, so they are collapsed on the page too.

After Sphinx, MathJax 3 (from the PyPI package django-static-mathjax) is copied into
_static/mathjax/, where the pages load it from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_copies as nc  # noqa: E402

REPO = nc.REPO
CONF_DIR = REPO / "book"
REMOTE_IMAGE = re.compile(r"\[!\[([^\]]*)\]\(https?://[^)]*\)\]\(([^)]*)\)|!\[([^\]]*)\]\(https?://[^)]*\)")


def landing_page(readme: str, pages: list[str]) -> str:
    """README.md as the book's index.md: no remote images, no maintainers' section, a toctree of `pages`."""

    def local(m: re.Match) -> str:
        return f"[{m.group(1)}]({m.group(2)})" if m.group(2) else m.group(3)

    text = REMOTE_IMAGE.sub(local, readme)
    # The book is for learners: the maintainers' section goes, and links to their documents become text.
    text = re.sub(r"\n## For maintainers\n.*?(?=\n## )", "\n", text, flags=re.S)
    text = re.sub(r"\[([^\]]*)\]\((?:MAINTAINERS\.md|benchmarks/README\.md)[^)]*\)", r"\1", text)
    toc = "\n".join(["", "```{toctree}", ":hidden:", ":maxdepth: 1", "", *pages, "```", ""])
    return text.rstrip("\n") + "\n" + toc


def _page_link(path: str) -> str | None:
    return "../index.md" if path == "../README.md" else None


def stage(paths: list[Path], src: Path) -> Path:
    """Write the book's sources into `src` (emptied first); return it."""
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    for path in paths:
        nb = nc.for_readers(nc.static_outputs(nc.read(path)))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = nc.relink(cell.source, _page_link)
            hidden = cell.metadata.get("jupyter", {})
            for key, tag in (("source_hidden", "hide-input"), ("outputs_hidden", "hide-output")):
                if hidden.get(key):  # collapsed in JupyterLab (the worked solutions): collapsed here too
                    cell.metadata.setdefault("tags", []).append(tag)
        nbformat.write(nb, src / "notebooks" / path.name)
    pages = [f"notebooks/{p.stem}" for p in paths]
    (src / "index.md").write_text(landing_page((REPO / "README.md").read_text(), pages), encoding="utf-8")
    return src


def build(paths: list[Path], out: Path, src: Path | None = None) -> Path:
    """Stage, run Sphinx into `out`, add MathJax; return out/index.html."""
    src = stage(paths, src or out.parent / "book_src")
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(CONF_DIR), "-q", "-E", str(src), str(out)]
    subprocess.run(command, check=True)
    nc.copy_mathjax(out / "_static" / "mathjax")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    args = nc.parse_args(__doc__, "book", argv)
    index = build(nc.series(args.notebooks), args.out)
    print(nc.shown(index))
    return 0


if __name__ == "__main__":
    sys.exit(main())
