"""What the slides and the book share: the series' notebooks, copied and made static.

Imported by tools/build_slides.py and tools/build_book.py (not run on its own). Everything here
works on a copy: the committed notebooks are never written.

- `series(paths)`: the notebooks to build, `notebooks/NN_name.ipynb` (or `NNb_name.ipynb`), in order.
- `static_outputs(nb)`: widget outputs as a page without a kernel can show them. A progress bar
  (tqdm) keeps its plain-text line ("training: 100%|####| ..."); an interactive widget, which
  only a live kernel can draw, becomes one line saying so (notebook 05's explorer is followed
  by a static figure of what its sliders do).
- `relink(markdown, target)`: rewrite the local links of a markdown cell (`01_x.ipynb`,
  `../README.md`) to where the built page lives.
- `for_readers(nb)`: the lesson without the test rig: the `# NBVAL_...` marker lines (and the
  `# (why)` comment under one) out of the code, the check cells (`claims` calls and the
  assignments they check: what nbval runs to hold the prose to its numbers) tagged `remove-cell`, and the
  sentence that explains the markers out of the introduction. The committed notebooks keep all
  of it for nbval.
- `asset(...)`: the folders of the packaged front-end files (reveal.js from sphinx-revealjs,
  MathJax 3 from django-static-mathjax) and `copy_mathjax(out)`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
SERIES_NAME = re.compile(r"^\d\d[a-z]?_\w+\.ipynb$")  # 02_..., and 02b_... for a notebook split in two
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    '<p class="widget-note"><em>An interactive widget is here when the notebook runs in JupyterLab; '
    "it needs a live kernel, so this page cannot show it.</em></p>"
)
# The file of MathJax 3 the pages load (TeX input, all TeX extensions, CommonHTML output), and the
# folders it loads from at run time: its fonts, the context menu, the assistive MathML.
MATHJAX_SCRIPT = "tex-chtml-full.js"
MATHJAX_PARTS = [MATHJAX_SCRIPT, "output/chtml/fonts/woff-v2", "ui", "a11y", "adaptors", "input"]
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
MARKER = re.compile(r"^# NBVAL_\w+[^\n]*\n(?:# \([^\n]*\)\n)?", re.M)
# The introduction's sentence on the markers, and the next one if it names the claims checks.
RIG_SENTENCE = re.compile(
    r"\**Cells\s+marked\s+`# NBVAL_IGNORE_OUTPUT`\**[^.]*\.(?:\s+[^.]*`claims\.expect`[^.]*\.)?\s*"
)
CHECK_CALLS = {"expect", "expect_between", "expect_true"}
REMOVE_CELL = "remove-cell"  # myst-nb drops such a cell, input and output


def series(paths: Iterable[Path]) -> list[Path]:
    """The given notebooks of the series (`NN_name.ipynb`, `NNb_name.ipynb`), sorted; a file that is
    missing, or named otherwise, is an error that says which."""
    paths = sorted(Path(p) for p in paths)
    if not paths:
        raise SystemExit("no notebooks given: name them, e.g. notebooks/[0-9][0-9]*_*.ipynb")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)} (run from the repository's root, or give its path)")
    wrong = [str(p) for p in paths if not SERIES_NAME.match(p.name)]
    if wrong:
        raise SystemExit(f"not notebooks of the series (named NN_name.ipynb or NNb_name.ipynb): {', '.join(wrong)}")
    return paths


def arguments(doc: str, out: str) -> argparse.ArgumentParser:
    """The command line every builder takes: notebooks, and ``--out`` (default build/<out>); a
    builder adds its own options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "build" / out)
    return parser


def parse_args(doc: str, out: str, argv: list[str] | None) -> argparse.Namespace:
    return arguments(doc, out).parse_args(argv)


def shown(path: Path) -> Path:
    """A path as a builder prints it: relative to the repository when inside it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def title(nb: nbformat.NotebookNode) -> str:
    """The notebook's title: the first `# ` heading of a markdown cell, or '' when it has none."""
    for cell in nb.cells:
        m = re.search(r"^# (.+)$", cell.source, re.MULTILINE) if cell.cell_type == "markdown" else None
        if m:
            return m.group(1).strip()
    return ""


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def static_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Replace widget outputs in `nb` (in place) by what a static page can show; return `nb`."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            del data[WIDGET_VIEW]
            if not text.strip() or re.match(r"\s*(interactive|[A-Z]\w*Box|\w+Slider)\(", text):
                output["data"] = {"text/html": WIDGET_NOTE, "text/plain": "(interactive widget)"}
    return nb


def strip_test_markers(source: str) -> str:
    """Code without nbval's `# NBVAL_...` lines (and the `# (why)` comment that may follow one)."""
    return MARKER.sub("", source if source.endswith("\n") else source + "\n").rstrip("\n")


def _claims_call(node: ast.stmt) -> bool:
    call = node.value if isinstance(node, ast.Expr) else None
    func = call.func if isinstance(call, ast.Call) else None
    return isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "claims" and func.attr in CHECK_CALLS


def _check_cell_names(source: str) -> set[str] | None:
    """The names a check cell assigns, or None when the cell is not a check cell: one that makes
    at least one `claims.expect*` call and otherwise only assigns (the values it checks). An
    `assert` is the lesson's own check of a formula against the library: such a cell stays."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    allowed = (ast.Assign, ast.AugAssign, ast.AnnAssign)
    if not any(_claims_call(n) for n in body) or not all(_claims_call(n) or isinstance(n, allowed) for n in body):
        return None
    return {t.id for n in body for t in ast.walk(n) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}


def _names_read(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def is_check_cell(source: str) -> bool:
    """Whether a code cell only checks the prose's numbers (see :func:`_check_cell_names`)."""
    return _check_cell_names(source) is not None


def for_readers(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Take the test rig out of `nb` (in place; see the module docstring); return `nb`.

    A check cell whose assignments a later cell reads stays (the reader would miss them), and so
    does a worked solution (collapsed in JupyterLab) that checks itself.
    """
    code = [c for c in nb.cells if c.cell_type == "code"]
    for k, cell in enumerate(code):
        names = _check_cell_names(cell.source)
        solution = cell.metadata.get("jupyter", {}).get("source_hidden")  # a worked solution is lesson
        if names is not None and not solution and not any(names & _names_read(later.source) for later in code[k + 1 :]):
            tags = cell.metadata.setdefault("tags", [])
            if REMOVE_CELL not in tags:
                tags.append(REMOVE_CELL)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_test_markers(cell.source)
        elif cell.cell_type == "markdown":
            cell.source = RIG_SENTENCE.sub("", cell.source)
    return nb


def relink(markdown: str, target: Callable[[str], str | None]) -> str:
    """Rewrite each local link `](path)` of `markdown` with `target(path)` (None keeps it)."""

    def one(m: re.Match) -> str:
        path = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", path):  # http:, mailto:, an anchor on the page
            return m.group(0)
        new = target(path)
        return m.group(0) if new is None else m.group(1) + new + m.group(3)

    return LINK.sub(one, markdown)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the package {module!r} is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def reveal_dir() -> Path:
    """reveal.js (dist/ and plugin/) as the PyPI package sphinx-revealjs ships it."""
    return _package_dir("sphinx_revealjs") / "_static" / "revealjs"


def mathjax_dir() -> Path:
    """MathJax 3's browser build (es5/) as the PyPI package django-static-mathjax ships it."""
    return _package_dir("mathjax") / "static" / "mathjax"


def copy_mathjax(out: Path) -> Path:
    """Copy the parts of MathJax the pages use into `out`; return the path of its script."""
    src = mathjax_dir()
    for part in MATHJAX_PARTS:
        source, dest = src / "es5" / part, out / part
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    shutil.copy2(src / "LICENSE", out / "LICENSE")
    return out / MATHJAX_SCRIPT
