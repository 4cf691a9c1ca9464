"""Build the static book of the executed series (what `make book` runs).

    python tools/build_book.py notebooks/[0-9][0-9]*_*.ipynb [--out build/book]

The book is Sphinx with myst-nb and sphinx-book-theme (configured in book/conf.py): each
notebook becomes a page with its stored outputs (nothing is re-executed), a landing page for
learners opens it, and the sidebar links the notebooks in order. Everything comes from PyPI
packages, so it builds and reads offline (MAINTAINERS.md, "The book's builder", says why not
Jupyter Book 2).

The sources are staged in build/book_src/ (ignored by git), never in notebooks/:

- index.md: book/landing.md (what you will learn, how to run the notebooks) with the path
  through the notebooks filled in from the notebooks themselves: each one's title and the
  reading time its first cell states (`**Reading time**: about N minutes`), and the Binder link
  built from the repository's address (pyproject.toml, `[project.urls] Repository`);
- references.md: the papers the notebooks cite (author and year in their text), from
  book/references.toml, each with the notebooks that cite it;
- notebooks/NN_name.ipynb: copies whose widget outputs are made static and whose test rig
  (nbval's markers, the claims check cells) is taken out (tools/notebook_copies.py), whose
  links to ../README.md point at the landing page, and, for the reader (`for_book`):
  the cells collapsed in JupyterLab (`jupyter.source_hidden`) carry myst-nb's `hide-input`
  tag, so they are collapsed on the page too; the code of every cell that draws a figure is
  collapsed as well; and every solution is labelled "Solution" (the notebooks say "Worked
  solution", "Exercise N" or "**Solution** (collapsed)").

After Sphinx, MathJax 3 (from the PyPI package django-static-mathjax) is copied into
_static/mathjax/, where the pages load it from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_copies as nc  # noqa: E402

REPO = nc.REPO
CONF_DIR = REPO / "book"
BINDERHUB = "https://mybinder.org"
READING_TIME = re.compile(r"\*\*Reading time\*\*\s*:?\s*about\s+(\d+)\s*min", re.I)

# What the reader sees on a collapsed code cell (myst-nb's prompts; book/conf.py sets the default).
SOLUTION_PROMPT = {"code_prompt_show": "Solution (code)", "code_prompt_hide": "Hide the solution"}
FIGURE_PROMPT = {"code_prompt_show": "Show the code of this figure", "code_prompt_hide": "Hide the code"}
ANSWERS_PROMPT = {"code_prompt_show": "Show the answers the checks compare with", "code_prompt_hide": "Hide them"}
FIGURE_OUTPUT = ("image/png", "image/svg+xml", "image/jpeg")
# Where the exercises begin: a heading that names them, or a line that opens with "**Exercise".
EXERCISES = re.compile(r"^(?:#+ [^\n]*Exercise|\*\*Exercise)", re.M | re.I)
SOLUTION_LINE = re.compile(r"^\*\*Solutions?\*\*\s*\(collapsed[^)\n]*\)[ \t]*(?:\n|$)", re.M)
SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.S)
EXERCISE_NUMBER = re.compile(r"\bExercise\s+(\d+)", re.I)
REFERENCE_ANSWERS = "# Reference answers"  # the hidden cell the exercises' checks compare with: not a solution

# An author-year citation as the notebooks write them: "Burda et al. (2016)", "Kingma and Welling, 2019",
# "Xiao, Rasul and Vollgraf, 2017", "Roeder, Wu & Duvenaud 2017", "Welling (2013)", "(..., Williams 1992".
SURNAME = r"[A-Z][a-zà-öø-ÿ'’]+(?:-[A-Z][a-zà-öø-ÿ'’]+)?"
CITATION = re.compile(
    rf"(?P<first>{SURNAME})"
    rf"(?:\s+et\s+al\.?,?\s*\(?|(?:,\s*{SURNAME})*\s+(?:and|&)\s+{SURNAME},?\s*\(?|\s+\()(?P<year>(?:19|20)\d\d)\b"
    rf"|(?<=[(;,] )(?P<bare>{SURNAME})\s+(?P<bare_year>(?:19|20)\d\d)\b"
)
NOT_AUTHORS = {"Spring", "Summer", "Autumn", "Fall", "Winter", "Since", "In", "From", "Until"}


def repository_url() -> str:
    """The repository's public address: pyproject.toml's `[project.urls] Repository`, its one place."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def binder_url(repository: str, notebook: str) -> str:
    """mybinder.org's link that opens `notebook` (a path in the repository) in JupyterLab."""
    owner_repo = re.sub(r"^https://github\.com/|/$|\.git$", "", repository)
    return f"{BINDERHUB}/v2/gh/{owner_repo}/HEAD?urlpath=lab/tree/{notebook}"


def reading_minutes(nb: nbformat.NotebookNode) -> int | None:
    """The reading time the first cell states (`**Reading time**: about N minutes`), or None."""
    match = READING_TIME.search(nb.cells[0].source) if nb.cells else None
    return int(match.group(1)) if match else None


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{minutes} minutes" if not hours else f"{hours} h {rest:02d} min"


def reading_path(notebooks: list[tuple[str, nbformat.NotebookNode]]) -> str:
    """The table of the landing page: each (page, notebook) in order, with its reading time when stated."""
    minutes = [reading_minutes(nb) for _, nb in notebooks]
    timed = any(m is not None for m in minutes)
    rows = ["| notebook | reading time |" if timed else "| notebook |", "|---|---|" if timed else "|---|"]
    for (page, nb), m in zip(notebooks, minutes, strict=True):
        link = f"[{nc.title(nb) or page}]({page}.ipynb)"
        rows.append(f"| {link} | {'' if m is None else f'about {m} min'} |" if timed else f"| {link} |")
    text = "\n".join(rows)
    if timed:
        text += "\n\nReading times are those each notebook states at its top: the time to read it, exercises"
        text += " not included."
        if all(m is not None for m in minutes):
            text += f" All {len(minutes)} together: about {_duration(sum(minutes))}."
    return text


def landing_page(notebooks: list[tuple[str, nbformat.NotebookNode]], repository: str) -> str:
    """index.md: book/landing.md with the path through `notebooks` (page, notebook), the links, a toctree."""
    first = notebooks[0][0] + ".ipynb"
    text = (CONF_DIR / "landing.md").read_text(encoding="utf-8")
    text = text.replace("{{path}}", reading_path(notebooks))
    text = text.replace("{{binder}}", binder_url(repository, first)).replace("{{repository}}", repository)
    pages = [page for page, _ in notebooks] + ["references"]
    toc = "\n".join(["", "```{toctree}", ":hidden:", ":maxdepth: 1", "", *pages, "```", ""])
    return text.rstrip("\n") + "\n" + toc


def citations(markdown: str) -> list[str]:
    """The author-year citations in `markdown`, as "Surname YEAR" (the first author's), in order."""
    found = []
    for m in CITATION.finditer(markdown):
        name, year = m.group("first") or m.group("bare"), m.group("year") or m.group("bare_year")
        if name not in NOT_AUTHORS:
            found.append(f"{name} {year}")
    return found


def bibliography() -> dict[str, dict]:
    """book/references.toml: each entry by its `cite` key ("Surname YEAR")."""
    entries = tomllib.loads((CONF_DIR / "references.toml").read_text(encoding="utf-8"))["reference"]
    return {e["cite"]: e for e in entries}


def cited_by(notebooks: list[tuple[str, nbformat.NotebookNode]]) -> dict[str, list[str]]:
    """Each citation key found in the notebooks' markdown, with the pages that cite it, in order."""
    where: dict[str, list[str]] = {}
    for page, nb in notebooks:
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                for key in citations(cell.source):
                    if page not in where.setdefault(key, []):
                        where[key].append(page)
    return where


def references_page(notebooks: list[tuple[str, nbformat.NotebookNode]]) -> str:
    """references.md: every cited paper that book/references.toml describes, with the notebooks citing it."""
    entries, where = bibliography(), cited_by(notebooks)
    lines = [
        "# References",
        "",
        "The papers the notebooks cite, by first author. The series follows a student lecture note,",
        "*Introduction to Variational Autoencoder* (Spring 2023), and corrects it where it is wrong.",
        "",
    ]
    for key in sorted(k for k in where if k in entries):
        entry = entries[key]
        link = f" <{entry['url']}>" if entry.get("url") else ""
        pages = ", ".join(f"[{page.split('/')[-1][:3].rstrip('_')}]({page}.ipynb)" for page in where[key])
        lines.append(f"- {entry['text']}{link} Cited in {pages}.")
    return "\n".join(lines) + "\n"


def _tag(cell: nbformat.NotebookNode, tag: str) -> None:
    tags = cell.metadata.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def for_book(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The copy as the book shows it (in place; see the module docstring); return `nb`."""
    in_exercises = False
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "markdown":
            in_exercises = in_exercises or bool(EXERCISES.search(cell.source))
            if in_exercises:
                source = SOLUTION_LINE.sub("", cell.source)

                def label(m: re.Match) -> str:
                    number = EXERCISE_NUMBER.search(m.group(1))
                    return f"<summary>Solution{' to exercise ' + number.group(1) if number else ''}</summary>"

                cell.source = SUMMARY.sub(label, source).strip("\n")
                if not cell.source.strip():
                    _tag(cell, nc.REMOVE_CELL)
            continue
        if cell.cell_type != "code" or nc.REMOVE_CELL in tags:
            continue
        hidden = cell.metadata.get("jupyter", {})
        if hidden.get("source_hidden"):  # collapsed in JupyterLab (the worked solutions): collapsed here too
            _tag(cell, "hide-input")
            if cell.source.startswith(REFERENCE_ANSWERS):
                cell.metadata["mystnb"] = dict(ANSWERS_PROMPT)
            elif in_exercises:
                cell.metadata["mystnb"] = dict(SOLUTION_PROMPT)
        elif any(k in o.get("data", {}) for o in cell.get("outputs", []) for k in FIGURE_OUTPUT):
            _tag(cell, "hide-input")  # a cell that draws a figure: the figure shows, its code is folded away
            cell.metadata["mystnb"] = dict(FIGURE_PROMPT)
        if hidden.get("outputs_hidden"):
            _tag(cell, "hide-output")
    return nb


def _page_link(path: str) -> str | None:
    return "../index.md" if path == "../README.md" else None


def stage(paths: list[Path], src: Path) -> Path:
    """Write the book's sources into `src` (emptied first); return it."""
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    notebooks = []
    for path in paths:
        nb = for_book(nc.for_readers(nc.static_outputs(nc.read(path))))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = nc.relink(cell.source, _page_link)
        nbformat.write(nb, src / "notebooks" / path.name)
        notebooks.append((f"notebooks/{path.stem}", nb))
    (src / "index.md").write_text(landing_page(notebooks, repository_url()), encoding="utf-8")
    (src / "references.md").write_text(references_page(notebooks), encoding="utf-8")
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
