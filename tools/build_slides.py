"""Build one reveal.js deck per notebook from its lecture path (what `make slides` runs).

    python tools/build_slides.py notebooks/[0-9][0-9]*_*.ipynb [--out build/slides]

For each notebook `NN_name.ipynb` this writes, under build/slides/ (ignored by git):

- `NN_name.ipynb`, a copy of the whole notebook with `slideshow` metadata: every cell not
  tagged `lecture` is skipped; a `#`/`##` heading starts a slide, a `###` heading a sub-slide,
  and a lecture cell too long for one 1280x720 slide is cut at paragraph breaks (a long list
  between its items) into sub-slides. Code whose output is the point (a figure, code that
  mostly prints, or more than 12 lines that print something) has its input hidden; code and
  printed output too wide for the slide get smaller type; `# NBVAL_...` marker lines are left
  out of the code shown, and a paragraph about them becomes a speaker note. jupyterlab-rise
  presents this copy live in JupyterLab (README, "For lecturers").
- `NN_name.slides.html`, the deck nbconvert's SlidesExporter makes of that copy with
  tools/slides_template/ (every script local; slide size, type, figures sized to fit).

and, once, `reveal.js/` (from the PyPI package sphinx-revealjs), `mathjax/` (MathJax 3, from the
PyPI package django-static-mathjax), `index.html` (a list of the decks) and `rise.css` (the
type sizes jupyterlab-rise uses for the copies). No tag in a deck loads
anything from the network; the figures are embedded in the HTML. Where a copy's code reads
`../NAME/` (notebook 04 reads ../benchmarks/results/), build/NAME links to the repository's
folder, so the copies also run in place.

How much fits on a slide is estimated from the text (characters per line, lines per slide, the
figures' pixel sizes). A slide still taller than 720 px is scaled down by the deck when shown;
tests/test_slides_book_browser.py measures every slide of every deck in a real browser and
fails when one would have to shrink below 70 %. With VAE_SLIDES_DEBUG=1 each slide's
<section> carries the estimate (data-lines), to compare with what the browser measures.
"""

from __future__ import annotations

import base64
import copy
import html
import math
import os
import re
import shutil
import struct
import sys
from pathlib import Path

import nbformat
from nbconvert import SlidesExporter
from nbconvert.preprocessors import TagRemovePreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_copies as nc  # noqa: E402

REPO = nc.REPO
TEMPLATE_DIR = Path(__file__).resolve().parent / "slides_template"
TAG = "lecture"
DEBUG = bool(os.environ.get("VAE_SLIDES_DEBUG"))
HIDE_INPUT = "remove-input"  # the tag nbconvert's TagRemovePreprocessor is given (and myst-nb knows)

# The slide, in reveal.js's own pixels (it scales the whole slide to the screen), and what fits on
# it. A "line" is one line of prose at the deck's 26 px font (tools/slides_template/deck.css).
SLIDE_W, SLIDE_H = 1280, 720
LINE_PX = 35.0
LINES_PER_SLIDE = 19.0  # of the 720 px: margins, the padding of the cells, a little slack
CHARS_PER_LINE = 100  # prose across the 1200 px text width
FIGURE_MAX_W, FIGURE_MAX_H, FIGURE_UPSCALE = 1180, 540, 1.35
MIN_SHRINK = 0.8  # a figure shrinks to this much of its size to stay on the slide, else starts its own
CODE_LINE, OUTPUT_LINE = 0.72, 0.64  # a line of code (20 px), of printed output (18 px), in lines
OUTPUT_MAX_LINES = 14  # longer printed output scrolls inside its box (deck.css)
OUTPUT_CHARS = 113  # characters of printed output across the slide (longer lines wrap)
# Characters across the slide for code and printed output at their three type sizes (deck.css:
# the default, then the tags deck-code-s / -xs and deck-output-s / -xs).
WIDTHS = {"code": (100, 112, 124), "output": (113, 136, 164)}
CODE_SHOWN_MAX = 12  # longer code that prints something is hidden: its output is the point
LONG_LIST = 7  # a list longer than this many lines may be cut between its items

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s")
ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")
LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
INLINE_MATH = re.compile(r"\$([^$]+)\$")


def is_lecture(cell) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def markdown_blocks(source: str) -> list[str]:
    """Cut markdown at blank lines and before headings, never inside a code fence, a `$$` block
    or a `<details>` element; an indented block (a list item's continuation) stays with the
    block before it."""
    blocks: list[list[str]] = []
    current: list[str] = []
    fence = display_math = False
    details = 0

    def flush():
        if any(line.strip() for line in current):
            blocks.append(current.copy())
        current.clear()

    for line in source.splitlines():
        quiet = not fence and not display_math and details == 0
        if quiet and HEADING.match(line):
            flush()
            blocks.append([line])
            continue
        if quiet and not line.strip():
            flush()
            continue
        if quiet and not current and blocks and line[:1] in (" ", "\t") and not HEADING.match(blocks[-1][0]):
            current.extend(blocks.pop() + [""])  # a continuation: glue it back, blank line kept
        current.append(line)
        if FENCE.match(line):
            fence = not fence
        elif not fence:
            if line.count("$$") % 2:
                display_math = not display_math
            details += len(re.findall(r"<details\b", line)) - line.count("</details>")
    flush()
    out = []
    for b in blocks:
        text = "\n".join(b)
        out.extend(_list_items(text) if ITEM.match(b[0]) and _text_lines(text) > LONG_LIST else [text])
    return out


def _list_items(text: str) -> list[str]:
    """A long list, cut before each item (an ordered list keeps its numbers)."""
    items: list[list[str]] = []
    for line in text.splitlines():
        if not items or (ITEM.match(line) and not line[:1].isspace()):
            items.append([line])
        else:
            items[-1].append(line)
    return ["\n".join(i) for i in items]


def _text_lines(text: str) -> float:
    """Lines a paragraph, list or table takes on the slide."""
    lines = text.splitlines()
    if all(line.lstrip().startswith("|") for line in lines):  # a table: one row a line, smaller type
        return 0.85 * sum(1 for line in lines if not re.match(r"^\s*\|[\s:|-]+\|\s*$", line)) + 0.4
    logical: list[str] = []
    broken = True  # the next source line starts a new line on the slide
    for line in lines:
        if broken or ITEM.match(line) or line.strip().startswith("$$"):
            logical.append(line.strip())
        else:
            logical[-1] += " " + line.strip()
        broken = line.endswith(("  ", "\\")) or line.strip().endswith("$$") or line.strip().startswith("$$")
    total = 0.0
    for line in logical:
        if line.startswith("$$"):
            total += 1.6 + 0.8 * line.count(r"\\")
            continue
        visible = LINK_TEXT.sub(r"\1", line).replace("**", "").replace("`", "")
        visible = INLINE_MATH.sub(lambda m: "x" * max(1, int(0.55 * len(m.group(1)))), visible)
        total += max(1, math.ceil(len(visible) / CHARS_PER_LINE))
    return total


def block_lines(block: str) -> float:
    m = HEADING.match(block)
    if m:
        return {1: 2.3, 2: 1.9, 3: 1.6}.get(len(m.group(1)), 1.3)
    return _text_lines(block) + 0.45  # the gap after a paragraph


def _png_size(data) -> tuple[int, int]:
    raw = base64.b64decode("".join(data)[:64])
    return struct.unpack(">II", raw[16:24])


def _output_lines(cell, shrink: float = 1.0) -> tuple[float, float]:
    """Lines the outputs take (all, and the figures' share), their figures scaled by `shrink`;
    each figure is given that display size (its output metadata, which nbconvert writes out)."""
    total = figures = 0.0
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "image/png" in data:
            w, h = _png_size(data["image/png"])
            scale = shrink * min(FIGURE_UPSCALE, FIGURE_MAX_W / w, FIGURE_MAX_H / h)
            output.setdefault("metadata", {})["image/png"] = {"width": round(w * scale), "height": round(h * scale)}
            figures += h * scale / LINE_PX + 0.3
        elif "text/html" in data:
            total += 1.5
        else:
            text = "".join(output.get("text") or data.get("text/plain", ""))
            wrapped = sum(max(1, math.ceil(len(line) / OUTPUT_CHARS)) for line in text.rstrip("\n").split("\n"))
            total += OUTPUT_LINE * min(OUTPUT_MAX_LINES, wrapped) + 0.5
    return total + figures, figures


def _output_width(outputs) -> int:
    texts = ["".join(o.get("text") or o.get("data", {}).get("text/plain", "")) for o in outputs]
    return max((len(line) for t in texts for line in t.splitlines()), default=0)


def _width_tags(kind: str, width: int) -> list[str]:
    """A tag for a cell whose widest line of code or output needs smaller type (deck.css)."""
    normal, small, _ = WIDTHS[kind]
    if width <= normal:
        return []
    return [f"deck-{kind}-{'s' if width <= small else 'xs'}"]  # past the smallest, lines wrap


def _slide_type(cell, kind: str) -> None:
    cell.metadata["slideshow"] = {"slide_type": kind}


def slide_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` with slideshow metadata, lecture cells cut to slides (see the module doc)."""
    if not any(is_lecture(c) for c in nb.cells):
        raise SystemExit(f"no cell is tagged {TAG!r}: nothing to put on slides")
    nb = nc.static_outputs(copy.deepcopy(nb))
    cells = []
    used = 0.0  # lines used on the current slide
    first = None  # the cell that starts it

    def add(cell, lines: float, heading: int | None = None) -> None:
        nonlocal used, first
        if heading is not None and heading <= 2:
            kind, used = "slide", lines
        elif heading == 3 or used + lines > LINES_PER_SLIDE:
            kind, used = "subslide", lines
        else:
            kind, used = "-", used + lines
        _slide_type(cell, kind)
        cells.append(cell)
        first = cell if kind != "-" or first is None else first
        if DEBUG:  # the estimate, as data-lines on the slide's <section>, to compare with the browser
            first.metadata["slideshow"]["data"] = {"lines": f"{used:.1f}"}

    for cell in nb.cells:
        if not is_lecture(cell):
            _slide_type(cell, "skip")
            cells.append(cell)
        elif cell.cell_type == "markdown":
            blocks = markdown_blocks(cell.source)
            groups: list[list[str]] = []  # blocks that go on one slide together, one cell each
            for block in blocks:
                m = HEADING.match(block)
                starts = m is not None and len(m.group(1)) <= 3
                # A heading stays with what follows it; an equation, text going on with a small
                # letter ("where ..."), or what a line ending in ":" announces, stays with the text
                # before it, if they fit on one slide together.
                glue = groups and (
                    HEADING.match(groups[-1][-1])
                    or (
                        (block.startswith("$$") or block[:1].islower() or groups[-1][-1].rstrip().endswith(":"))
                        and sum(map(block_lines, groups[-1] + [block])) <= LINES_PER_SLIDE
                    )
                )
                if starts or not glue:
                    groups.append([block])
                else:
                    groups[-1].append(block)
            for k, group in enumerate(groups):
                text = "\n\n".join(group)
                piece = nbformat.v4.new_markdown_cell(text, metadata=copy.deepcopy(cell.metadata))
                if "id" in cell:
                    piece.id = f"{cell.id[:56]}-{k}"  # the same ids on every build
                m = HEADING.match(group[0])
                if "NBVAL" in text and m is None:
                    _slide_type(piece, "notes")  # how the tests treat a cell: speaker notes, not a slide
                    cells.append(piece)
                    continue
                add(piece, sum(block_lines(b) for b in group), len(m.group(1)) if m else None)
        else:
            cell.source = nc.strip_test_markers(cell.source)
            outputs = cell.get("outputs", [])
            has_figure = any("image/png" in o.get("data", {}) for o in outputs)
            code_lines = cell.source.splitlines()
            n_code = len(code_lines)
            printing = sum(line.lstrip().startswith("print(") for line in code_lines) >= n_code / 2
            hide = has_figure or (outputs and (n_code > CODE_SHOWN_MAX or printing))
            tags = cell.metadata.setdefault("tags", [])
            if hide:
                tags.append(HIDE_INPUT)
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True  # JupyterLab, and so RISE
            else:
                tags.extend(_width_tags("code", max(map(len, code_lines), default=0)))
            tags.extend(_width_tags("output", _output_width(outputs)))
            code = 0.0 if hide else CODE_LINE * n_code + 0.6
            lines, figures = _output_lines(cell)
            over = used + code + lines - LINES_PER_SLIDE  # lines past the end of the current slide
            if figures and 0 < over <= (1 - MIN_SHRINK) * figures:  # a smaller figure stays on this slide
                lines, _ = _output_lines(cell, shrink=1 - over / figures)
            add(cell, code + lines)
    nb.cells = cells
    # jupyterlab-rise reads its settings from here: the deck's size and theme ("simple", its default,
    # imports web fonts), and long slides scroll.
    nb.metadata["rise"] = {
        "width": SLIDE_W,
        "height": SLIDE_H,
        "theme": "white",
        "transition": "none",
        "center": False,
        "scroll": True,
    }
    return nb


def _deck_link(path: str) -> str | None:
    """A link of a notebook, as the deck should have it: the other decks, or the list of decks."""
    name, _, anchor = path.partition("#")
    if nc.SERIES_NAME.match(name):
        return name.replace(".ipynb", ".slides.html") + ("#" + anchor if anchor else "")
    if name == "../README.md":
        return "index.html"
    return None


def exporter() -> SlidesExporter:
    exp = SlidesExporter(
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        template_name="vae_reveal",
        reveal_url_prefix="reveal.js",
        reveal_theme="white",  # its fonts are in reveal.js/dist/theme/fonts ("simple" imports web fonts)
        reveal_width=str(SLIDE_W),
        reveal_height=str(SLIDE_H),
        reveal_number="c/t",
        reveal_transition="none",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={HIDE_INPUT}), enabled=True)
    return exp


def write_deck(path: Path, out: Path, exp: SlidesExporter | None = None) -> Path:
    """Write the slide copy and the deck of the notebook at `path` into `out`; return the deck."""
    nb = slide_notebook(nc.read(path))
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / path.name)  # links to the other notebooks' copies beside it, for RISE
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = nc.relink(cell.source, _deck_link)
    body, _ = (exp or exporter()).from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    deck = out / path.name.replace(".ipynb", ".slides.html")
    deck.write_text(body, encoding="utf-8")
    return deck


def link_siblings(paths: list[Path], out: Path) -> list[Path]:
    """Let the copies in `out` run where their code reads `../NAME/` (notebook 04 reads
    ../benchmarks/results/): link out/../NAME to the repository's NAME. Returns the new links."""
    made = []
    names = {m.group(1) for p in paths for m in re.finditer(r"\.\./(\w+)/", _code(p))}
    for name in sorted(names):
        link, target = out.resolve().parent / name, REPO / name
        if target.is_dir() and link != target and not link.exists() and not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
            made.append(link)
    return made


def _code(path: Path) -> str:
    return "\n".join(c.source for c in nc.read(path).cells if c.cell_type == "code")


def copy_assets(out: Path) -> None:
    """reveal.js (its dist/ and the speaker-notes plugin) and MathJax, beside the decks."""
    src, dest = nc.reveal_dir(), out / "reveal.js"
    shutil.copytree(src / "dist", dest / "dist", ignore=shutil.ignore_patterns("*.map", "*.esm.js"), dirs_exist_ok=True)
    shutil.copytree(src / "plugin" / "notes", dest / "plugin" / "notes", dirs_exist_ok=True)
    shutil.copy2(src / "LICENSE", dest / "LICENSE")
    nc.copy_mathjax(out / "mathjax")
    shutil.copy2(TEMPLATE_DIR / "rise.css", out / "rise.css")  # jupyterlab-rise's styles for the copies


def title(nb: nbformat.NotebookNode) -> str:
    """The notebook's first `# ` heading."""
    for cell in nb.cells:
        m = re.search(r"^# (.+)$", cell.source, re.MULTILINE) if cell.cell_type == "markdown" else None
        if m:
            return m.group(1).strip()
    return "(untitled)"


def write_index(decks: list[tuple[Path, str]], out: Path) -> Path:
    """A page listing the decks (`(path, title)` each), which the decks' "Series overview" links."""
    items = "\n".join(f'<li><a href="{d.name}">{html.escape(t)}</a></li>' for d, t in decks)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Lecture slides</title>\n'
        "<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;font-size:1.2em}</style></head>\n"
        f"<body><h1>Variational autoencoders: lecture slides</h1>\n<ul>\n{items}\n</ul>\n"
        "<p>Keys: arrows or space to move, <kbd>Esc</kbd> for the overview, <kbd>S</kbd> for speaker notes, "
        "<kbd>F</kbd> for full screen.</p></body></html>\n"
    )
    target = out / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    args = nc.parse_args(__doc__, "slides", argv)
    paths = nc.series(args.notebooks)
    copy_assets(args.out)
    exp = exporter()
    decks = []
    for path in paths:
        deck = write_deck(path, args.out, exp)
        decks.append((deck, title(nc.read(path))))
        print(nc.shown(deck))
    write_index(decks, args.out)
    link_siblings(paths, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
