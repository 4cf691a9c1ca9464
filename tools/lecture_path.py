"""The lecture path of each notebook: write it out, or check that it stands alone.

    python tools/lecture_path.py notebooks/[0-9][0-9]*_*.ipynb          (what `make lecture` runs)
    python tools/lecture_path.py --check notebooks/NAME.ipynb ...       (the lecture-path checker)

Every notebook of the series tags the cells of a 75-minute lecture with the cell tag
`lecture`; the other cells are for self-study. Without `--check` this writes, for each notebook
given, a copy holding only the tagged cells, in order and with their stored outputs, under
build/lecture/ (ignored by git). A lecturer opens those in JupyterLab and presents them;
students keep the full notebooks. tools/build_slides.py makes the reveal.js deck of the same path.

`--check` reads only the tagged cells, as a lecture does, and prints one line per finding
(`NAME cell N: why`), then each notebook's estimated length; it exits 1 when anything was found:

- a promise without its output: a tagged markdown cell that ends with a colon, or that says
  "below", "the following", "next cell", "above", "the table" or "the figure", while the shown
  tagged cells in that direction (the next or previous two; code without output is not shown)
  hold no output to point at (for "above", an equation or a table counts too);
- a tagged code cell that reads a name first bound only in cells off the path (a name an
  earlier tagged cell binds, a builtin, or one bound in no earlier cell is fine);
- a tagged markdown cell without `slide` metadata (the text the projector shows, see
  tools/build_slides.py), or with slide text of more than 90 visible words;
- an estimated length over 75 minutes.

The estimate (the design of issue #26): words of speaker notes / 110 a minute, plus a minute per
figure or table shown, plus half a minute per slide. The speaker notes are the tagged markdown
cells' full text (math counts one word per inline formula, five per displayed equation); the
figures, tables and slides are counted in the deck tools/build_slides.py builds.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
import sys
from pathlib import Path
from typing import NamedTuple

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_copies as nc  # noqa: E402

REPO = nc.REPO
TAG = "lecture"
SLIDE_KEY = "slide"  # cell.metadata["slide"]: the slide text (a string, a list of fragments, or "")
MAX_SLIDE_WORDS = 90
MAX_MINUTES = 75
WORDS_PER_MINUTE = 110
MINUTES_PER_FIGURE, MINUTES_PER_SLIDE = 1.0, 0.5
NEAR = 2  # how many shown tagged cells a "below"/"above" may reach

DISPLAY_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$[^$\n]+\$|\\\(.*?\\\)")
FENCED = re.compile(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", re.S | re.M)
TAGS = re.compile(r"<[^>\n]+>")
IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
WORD = re.compile(r"[^\W_]", re.U)
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.M)
HEADING = re.compile(r"^#{1,6}\s")

# Promises. "below"/"above" count where they point at something ("the figure below", "shown
# above.", "below:"), not where they compare ("falls below the floor", "bounded below by").
_THING = (
    r"(?:figure|plot|table|cell|code|images?|grid|panel|curves?|output|numbers|histogram|samples|rows?"
    r"|columns?|picture|diagram|results?|list|printout)s?"
)
_NOT_COMPARED = r"(?!\s+(?:the|a|an|its|their|this|that|zero|one|\d|\$))"  # "the loss below 200" compares
FORWARD = re.compile(
    rf"\b{_THING}\s+(?:shown\s+|printed\s+|plotted\s+|drawn\s+)?below\b"
    rf"|\bthe\s+\w+\s+below\b{_NOT_COMPARED}"
    r"|\b(?:shown|printed|plotted|drawn|listed|see|as)\s+below\b"
    r"|\bbelow\s*(?:[.:;!?)]|,\s|$)"
    r"|\bthe\s+following\b|\bas\s+follows\b|\bnext\s+cells?\b|\bcells?\s+(?:below|after\s+this)\b",
    re.I | re.M,
)
BACKWARD = re.compile(
    rf"\b{_THING}\s+(?:shown\s+|printed\s+|plotted\s+|drawn\s+)?above\b"
    rf"|\bthe\s+\w+\s+above\b{_NOT_COMPARED}"
    r"|\b(?:shown|printed|plotted|drawn|listed|see|as)\s+above\b"
    r"|\babove\s*(?:[.:;!?)]|,\s|$)"
    r"|\bprevious\s+cells?\b",
    re.I | re.M,
)
EITHER = re.compile(r"\bthe\s+(?:table|figure|plot)\b", re.I)


def is_lecture(cell) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def lecture_cells(nb: nbformat.NotebookNode) -> list:
    """The cells of `nb` tagged `lecture`, in order."""
    return [c for c in nb.cells if is_lecture(c)]


# ------------------------------------------------------------------ words
def plain_text(markdown: str) -> str:
    """What a reader sees of `markdown`, as words: no math, code blocks, tables, HTML tags, link
    targets, images or markdown punctuation."""
    text = FENCED.sub(" ", markdown)
    text = TABLE_ROW.sub(" ", text)  # a table is read, not spoken: its cells are no slide text
    text = DISPLAY_MATH.sub(" ", text)
    text = INLINE_MATH.sub(" ", text)
    text = IMAGE.sub(" ", text)
    text = LINK.sub(r"\1", text)
    text = TAGS.sub(" ", text)
    return re.sub(r"[#*_`|>]+", " ", text)


def visible_words(markdown: str) -> int:
    """Words of visible text in `markdown` (math left out, as tests/test_slides_book_browser.py
    counts them on the rendered slide): whitespace-separated tokens holding a letter or digit."""
    return sum(1 for token in plain_text(markdown).split() if WORD.search(token))


def spoken_words(markdown: str) -> int:
    """Words a lecturer says for `markdown`: its visible words, one per inline formula, five per
    displayed equation."""
    text = FENCED.sub(" ", markdown)
    return (
        visible_words(text)
        + len(INLINE_MATH.findall(DISPLAY_MATH.sub(" ", text)))
        + 5 * sum(1 for _ in DISPLAY_MATH.finditer(text))
    )


def slide_text(cell) -> str | list | None:
    """The cell's `slide` metadata, or None where it has none."""
    return cell.get("metadata", {}).get(SLIDE_KEY)


def heading_line(markdown: str) -> str | None:
    """The cell's first line when it is a heading (`#` to `######`), else None."""
    first = markdown.lstrip("\n").split("\n", 1)[0]
    return first.strip() if HEADING.match(first) else None


def minutes(notes_words: int, figures_and_tables: int, slides: int) -> float:
    """The estimated length of a lecture (see the module docstring)."""
    return notes_words / WORDS_PER_MINUTE + MINUTES_PER_FIGURE * figures_and_tables + MINUTES_PER_SLIDE * slides


# ------------------------------------------------------------------ what a cell shows
def _outputs(cell) -> list:
    return cell.get("outputs", []) if cell.cell_type == "code" else []


def has_output(cell) -> bool:
    """Whether a code cell shows something (a stream, a result, a figure, an error)."""
    for o in _outputs(cell):
        if o.get("output_type") == "stream" and not "".join(o.get("text", "")).strip():
            continue
        return True
    return False


def shows_reference_target(cell) -> bool:
    """What "above" may point at: an output, or a markdown equation or table."""
    if cell.cell_type == "code":
        return has_output(cell)
    return _shows_in(cell.source)


def _shows_in(markdown: str) -> bool:
    """Whether a piece of markdown holds an equation or a table to point at."""
    return bool(DISPLAY_MATH.search(markdown) or TABLE_ROW.search(markdown))


def _shown_path(nb) -> list[tuple[int, object]]:
    """(index, cell) of the tagged cells a lecture shows: markdown, and code with output."""
    return [(i, c) for i, c in enumerate(nb.cells) if is_lecture(c) and (c.cell_type == "markdown" or has_output(c))]


def _ends_with_colon(text: str) -> bool:
    return text.rstrip().rstrip("*_ ").endswith(":")


def _answers_colon(cell) -> bool:
    """What may follow a line ending in a colon: an output, or markdown that opens with an
    equation, a table or a list."""
    if cell.cell_type == "code":
        return has_output(cell)
    start = cell.source.lstrip()
    return start.startswith(("$$", "|", "\\[", "\\begin")) or bool(re.match(r"([-*+]|\d+[.)])\s", start))


# ------------------------------------------------------------------ names
MAGIC = re.compile(r"^(\s*)%{1,2}\w+(?:\s+-\w+(?:\s+\d+)?)*\s*")


def _code(source: str) -> str:
    """Python of a code cell: shell lines left out, the magic taken off a line magic's statement
    (`%time y = f(x)` reads f and x)."""
    lines = ("" if line.lstrip().startswith("!") else MAGIC.sub(r"\1", line) for line in source.splitlines())
    return "\n".join(lines)


def names_bound(source: str) -> set[str]:
    """Names a code cell binds at the top level (assignments, imports, def, class, for, with)."""
    try:
        table = symtable.symtable(_code(source), "<cell>", "exec")
    except SyntaxError:
        return set()
    return {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}


def names_read(source: str) -> set[str]:
    """Global names a code cell reads: at the top level, or free in a function, class or
    comprehension (their own parameters and locals are not)."""
    try:
        table = symtable.symtable(_code(source), "<cell>", "exec")
    except SyntaxError:
        return set()
    read = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    stack = list(table.get_children())
    while stack:
        t = stack.pop()
        stack.extend(t.get_children())
        read |= {s.get_name() for s in t.get_symbols() if s.is_referenced() and s.is_global()}
    # decorators, default values and base classes are read at the top level: symtable has them there
    return read


def names_read_first(source: str) -> set[str]:
    """Global names a code cell reads before it binds them itself, statement by statement:
    `state = step(state)` reads `state` first; `x = 1; print(x)` does not. What a function or class
    body reads counts against everything the cell binds (it runs when called, later)."""
    code = _code(source)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    lines = code.splitlines()
    bound, first, deferred = set(), set(), set()
    for stmt in tree.body:
        start = min([d.lineno for d in getattr(stmt, "decorator_list", [])] + [stmt.lineno])
        segment = "\n".join(lines[start - 1 : stmt.end_lineno])
        segment = segment[stmt.col_offset :] if start == stmt.lineno else segment
        read = names_read(segment)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            deferred |= read
        else:
            first |= read - bound
        bound |= names_bound(segment)
    return first | (deferred - bound)


BUILTINS = set(dir(builtins)) | {"display", "get_ipython", "__file__", "In", "Out"}


# ------------------------------------------------------------------ the check
class Finding(NamedTuple):
    """One finding: the notebook, the cell's index, why."""

    notebook: str
    cell: int
    why: str

    def __str__(self) -> str:
        return f"{self.notebook} cell {self.cell}: {self.why}"


def _slide_words(cell) -> int:
    text = slide_text(cell)
    body = "\n\n".join(text) if isinstance(text, list) else (text or "")
    heading = heading_line(cell.source) or ""
    return visible_words(heading + "\n\n" + body)


def check_promises(nb, name: str) -> list[Finding]:
    found = []
    shown = _shown_path(nb)
    for k, (i, cell) in enumerate(shown):
        if cell.cell_type != "markdown":
            continue
        after = [c for _, c in shown[k + 1 : k + 1 + NEAR]]
        before = [c for _, c in shown[max(0, k - NEAR) : k]]
        texts = [cell.source]
        text = slide_text(cell)
        if isinstance(text, list) and text:
            texts.append(text[-1])
        elif isinstance(text, str) and text:
            texts.append(text)
        if any(_ends_with_colon(t) for t in texts) and not (after and _answers_colon(after[0])):
            found.append(Finding(name, i, "ends with a colon, and the next shown tagged cell is no output"))
        prose = FENCED.sub(" ", "\n".join(texts))
        m = FORWARD.search(prose)  # "below" may point at an equation or table later in the cell itself
        if m and not _shows_in(prose[m.end() :]) and not any(c.cell_type == "code" for c in after):
            found.append(Finding(name, i, f"says {m.group(0).strip()!r}, and no output follows on the path"))
        m = BACKWARD.search(prose)
        if m and not _shows_in(prose[: m.start()]) and not any(shows_reference_target(c) for c in before):
            found.append(Finding(name, i, f"says {m.group(0).strip()!r}, and no output precedes on the path"))
        m = EITHER.search(prose)
        if m and not (TABLE_ROW.search(cell.source) or any(c.cell_type == "code" for c in before + after)):
            found.append(Finding(name, i, f"says {m.group(0).strip()!r}, and no output is near on the path"))
    return found


def check_names(nb, name: str) -> list[Finding]:
    found = []
    on_path: set[str] = set()
    off_path: set[str] = set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        bound = names_bound(cell.source)
        if is_lecture(cell):
            missing = sorted((names_read_first(cell.source) - on_path - BUILTINS) & off_path)
            if missing:
                found.append(Finding(name, i, f"reads {', '.join(missing)}, bound only in cells off the path"))
            on_path |= bound
        else:
            off_path |= bound
    return found


def check_slides(nb, name: str) -> list[Finding]:
    found = []
    for i, cell in enumerate(nb.cells):
        if not is_lecture(cell) or cell.cell_type != "markdown":
            continue
        text = slide_text(cell)
        if text is None:
            found.append(
                Finding(
                    name,
                    i,
                    "tagged markdown without `slide` metadata (the projector's text): add cell.metadata"
                    '["slide"], a string (one slide), a list of strings (fragments) or "" (speaker notes only)',
                )
            )
            continue
        if not isinstance(text, (str, list)) or (isinstance(text, list) and not all(isinstance(t, str) for t in text)):
            found.append(Finding(name, i, "`slide` metadata must be a string or a list of strings"))
            continue
        words = _slide_words(cell)
        if words > MAX_SLIDE_WORDS:
            found.append(Finding(name, i, f"slide text has {words} visible words (at most {MAX_SLIDE_WORDS})"))
    return found


def estimate(nb) -> dict:
    """The deck's numbers (slides, figures and tables, speaker-note words) and its minutes."""
    import build_slides  # noqa: PLC0415 (it imports this module)

    return build_slides.deck_numbers(nb)


def check(path: Path) -> tuple[list[Finding], dict]:
    nb = nbformat.read(path, as_version=4)
    name = path.stem
    if not lecture_cells(nb):
        return [Finding(name, 0, f"no cell is tagged {TAG!r}")], {}
    found = check_promises(nb, name) + check_names(nb, name) + check_slides(nb, name)
    numbers = estimate(nb)
    index = {cell.get("id"): i for i, cell in enumerate(nb.cells)}
    for cell_id in numbers.get("small_figures", []):
        found.append(
            Finding(
                name,
                index.get(cell_id, 0),
                "its figure would be shown with type under 14 pt even on a slide of its own (with the cell's other"
                " output): draw it wider or less tall, or print the table in a cell of its own",
            )
        )
    if numbers["minutes"] > MAX_MINUTES:
        found.append(Finding(name, 0, f"estimated {numbers['minutes']:.0f} minutes, over {MAX_MINUTES}"))
    return sorted(found, key=lambda f: f.cell), numbers


# ------------------------------------------------------------------ the lecture copy
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


def describe(numbers: dict) -> str:
    return (
        f"about {numbers['minutes']:.0f} min: {numbers['slides']} slides, "
        f"{numbers['figures_and_tables']} figures and tables, {numbers['notes_words']} words of speaker notes"
    )


def main(argv: list[str] | None = None) -> int:
    parser = nc.arguments(__doc__, "lecture")
    parser.add_argument("--check", action="store_true", help="check the lecture paths instead of writing them")
    args = parser.parse_args(argv)
    paths = nc.series(args.notebooks)
    if args.check:
        failed = False
        for path in paths:
            found, numbers = check(path)
            for f in found:
                print(f)
            failed |= bool(found)
            if numbers:
                print(f"{path.stem}: {describe(numbers)}{'' if found else ', path OK'}")
        return 1 if failed else 0
    for path in paths:
        target = write_lecture(path, args.out)
        n = len(lecture_cells(nbformat.read(target, as_version=4)))
        print(f"{nc.shown(target)}: {n} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
