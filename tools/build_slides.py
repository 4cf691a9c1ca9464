"""Build one reveal.js deck per notebook from its lecture path (what `make slides` runs).

    python tools/build_slides.py notebooks/[0-9][0-9]*_*.ipynb [--out build/slides] [--no-pdf]

A notebook's lecture path is its cells tagged `lecture`, in order (tools/lecture_path.py checks
that it stands alone). Each tagged markdown cell carries the text the projector shows in its
metadata, `cell.metadata["slide"]`, kept in the notebook so that it is reviewed with it:

- a string: one slide, that markdown (a short statement, a key equation, a few bullets);
- a list of strings: one slide built up step by step, one item per key press (reveal.js
  fragments; derivations and bullets);
- "" (empty): no slide of its own; the cell's text goes to the speaker notes of the slide before.

A cell that starts with a heading line keeps it as the slide's title. The cell's whole markdown
becomes the speaker notes of its slide (reveal.js: `S`), so the full argument is at hand. A tagged
markdown cell without `slide` metadata is cut into slides as before the metadata existed: at its
headings and, where too long for one slide, at paragraph breaks (its own text on the slide).

A tagged code cell without output is skipped (it still runs in the live copy). One with output
shows it: the input is hidden where the output is the point (a figure, a table, code that mostly
prints, or more than 8 lines), `# NBVAL_...` marker lines are left out of the code shown. An output
stays on the slide before when it fits there with its figures at least at their natural size
(fonts as drawn: vae_lib.notebook.plotting draws at 14 pt), else it gets a slide of its own
and its figures fill the slide. Code is shown at 20 px and printed output at 18 px (long lines
wrap); tables at 22 px. A printed table (columns of text two blanks or more apart) is shown as an
HTML table, its numbers right-aligned; one too tall for a slide goes on over as many slides as it
needs, its header repeated.

The deck starts with a title slide: the notebook's title, the lecture's estimated length and
slide count (tools/lecture_path.py: the estimate) and the first cell's `**Reading time**` and
`**What you need to know**` lines. Navigation is linear: the right arrow and space visit every
slide and fragment in order.

For each notebook `NN_name.ipynb` this writes, under build/slides/ (ignored by git):

- `NN_name.ipynb`, a copy of the whole notebook with `slideshow` metadata (cells off the path
  skipped); jupyterlab-rise presents it live in JupyterLab (README, "For lecturers");
- `NN_name.slides.html`, the deck nbconvert's SlidesExporter makes of that copy with
  tools/slides_template/ (every script local; slide size, type, figures sized to fit);
- `NN_name.pdf`, the handout: the deck's print view (`?print-pdf`, one page a slide, fragments
  shown) printed by headless Chromium (chromium, chromium-browser or google-chrome on PATH);
  skipped, saying so, where none is installed or with --no-pdf;

and, once, `reveal.js/` (from the PyPI package sphinx-revealjs), `mathjax/` (MathJax 3, from the
PyPI package django-static-mathjax), `index.html` (the decks with their length, slide count and
handout) and `rise.css` (the type sizes jupyterlab-rise uses for the copies). No tag in a deck
loads anything from the network; the figures are embedded in the HTML. Where a copy's code reads
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
import functools
import html
import http.server
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import nbformat
from nbconvert import SlidesExporter
from nbconvert.preprocessors import TagRemovePreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lecture_path as lp  # noqa: E402
import notebook_copies as nc  # noqa: E402

REPO = nc.REPO
TEMPLATE_DIR = Path(__file__).resolve().parent / "slides_template"
TAG = lp.TAG
DEBUG = bool(os.environ.get("VAE_SLIDES_DEBUG"))
HIDE_INPUT = "remove-input"  # the tag nbconvert's TagRemovePreprocessor is given (and myst-nb knows)

# The slide, in reveal.js's own pixels (it scales the whole slide to the screen), and what fits on
# it. A "line" is one line of prose at the deck's 26 px font (tools/slides_template/deck.css).
SLIDE_W, SLIDE_H = 1280, 720
LINE_PX = 35.0
LINES_PER_SLIDE = 19.0  # of the 720 px: margins, the padding of the cells, a little slack
CHARS_PER_LINE = 100  # prose across the 1200 px text width
FIGURE_MAX_W = 1240  # a figure's width on the slide, at most (1280 less the padding)
FIGURE_UPSCALE = 1.35  # a figure beside text is enlarged up to this much ...
FIGURE_ALONE_UPSCALE = 2.0  # ... and one on its own slide up to this much, to fill the slide
MIN_FIGURE_SCALE = 1.0  # smaller than its natural size, a figure goes on a slide of its own ...
MIN_FIGURE_TYPE_PX = 14 * 96 / 72  # ... or where its smallest type would be under 14 pt (18.7 px)
CODE_LINE, OUTPUT_LINE = 0.75, 0.67  # a line of code (20 px), of printed output (18 px), in lines
TABLE_ROW = 1.0  # a row of a table at 22 px, in lines
OUTPUT_MAX_LINES = 26  # longer printed output scrolls inside its box (deck.css): a slide of its own holds 26
CODE_CHARS, OUTPUT_CHARS = 100, 113  # characters across the slide at 20 and 18 px (longer lines wrap)
CODE_SHOWN_MAX = 8  # longer code that prints something is hidden: its output is the point
LONG_LIST = 7  # a list longer than this many lines may be cut between its items

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s")
ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")
LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
INLINE_MATH = re.compile(r"\$([^$]+)\$")
TALL_MATH = re.compile(r"\\(?:frac|dfrac|int|sum|prod|underbrace|overbrace|begin|binom|sqrt)\b")
MD_TABLE = re.compile(r"^\s*\|.*\|\s*$\n^\s*\|[\s:|-]+\|\s*$", re.M)  # a header row and its rule


is_lecture = lp.is_lecture


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
        if line.startswith("$$"):  # a displayed equation, its margins, and its height if it stacks
            total += 2.2 + 1.0 * line.count(r"\\") + (0.7 if TALL_MATH.search(line) else 0.0)
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


def _wrapped(text: str, chars: int) -> int:
    return sum(max(1, math.ceil(len(line) / chars)) for line in text.rstrip("\n").split("\n"))


def _html_table_rows(html_text: str) -> int:
    return len(re.findall(r"<tr\b", html_text))


def _measure_outputs(cell) -> tuple[float, list[tuple[int, int]]]:
    """The lines a code cell's outputs take apart from figures, and its figures' pixel sizes."""
    lines, figures = 0.0, []
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "image/png" in data:
            figures.append(_png_size(data["image/png"]))
        elif "slide_lines" in output.get("metadata", {}):  # a printed table, shown as HTML (printed_tables)
            lines += output["metadata"]["slide_lines"]
        elif "text/html" in data:
            text = "".join(data["text/html"])
            rows = _html_table_rows(text)
            lines += TABLE_ROW * rows + 0.6 if rows else 1.5
        else:
            text = "".join(output.get("text") or data.get("text/plain", "") or output.get("traceback", ""))
            lines += OUTPUT_LINE * min(OUTPUT_MAX_LINES, _wrapped(text, OUTPUT_CHARS)) + 0.5
    return lines, figures


PLOTTING = REPO / "vae_lib" / "notebook" / "plotting.py"
PLOTTING_IMPORT = re.compile(r"from vae_lib\.notebook import[^\n]*\bplotting\b|import vae_lib\.notebook\.plotting")
EXPLICIT_SIZE = re.compile(r"\b(?:fontsize|labelsize)\s*=\s*(\d+(?:\.\d+)?)")


def type_points(nb: nbformat.NotebookNode) -> dict[int, float]:
    """The smallest type (pt) each code cell's figures are drawn with, by the cell's position: 14
    once the notebook has imported vae_lib.notebook.plotting (it sets matplotlib's default), else
    matplotlib's 10, or less where the cell, or a plotting function it calls, asks for a smaller
    `fontsize=`/`labelsize=` in points. An estimate from the code, not from the picture."""
    plotting = PLOTTING.read_text() if PLOTTING.is_file() else ""
    small = {
        name: [float(x) for x in EXPLICIT_SIZE.findall(body)]
        for name, body in re.findall(r"\ndef (\w+)\((.*?)(?=\ndef |\Z)", plotting, re.S)
    }
    base, points = 10.0, {}
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if PLOTTING_IMPORT.search(cell.source):
            base = 14.0
        sizes = [float(x) for x in EXPLICIT_SIZE.findall(cell.source)]
        sizes += [p for name, ps in small.items() if f"plotting.{name}(" in cell.source for p in ps]
        points[k] = min([base, *sizes])
    return points


def _png_dpi(data) -> float:
    """The dots per inch matplotlib wrote into a PNG (its pHYs chunk); 100 where there is none."""
    raw = base64.b64decode("".join(data)[:512])
    k = raw.find(b"pHYs")
    if k < 0 or len(raw) < k + 13:
        return 100.0
    per_metre, _, unit = struct.unpack(">IIB", raw[k + 4 : k + 13])
    return per_metre * 0.0254 if unit == 1 and per_metre else 100.0


def _readable_scale(cell, points: float) -> float:
    """The scale at which the smallest type of the cell's figures is 14 pt on the slide."""
    dpis = [_png_dpi(o["data"]["image/png"]) for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    return max((MIN_FIGURE_TYPE_PX / (points * dpi / 72) for dpi in dpis), default=0.0)


def _figure_scale(figures: list[tuple[int, int]], room_lines: float, upscale: float) -> float:
    """The one scale for a cell's figures (stacked) that fits `room_lines` of height."""
    if not figures:
        return upscale
    height = room_lines * LINE_PX - 0.3 * LINE_PX * len(figures)
    return min(upscale, FIGURE_MAX_W / max(w for w, _ in figures), height / sum(h for _, h in figures))


def _size_figures(cell, scale: float) -> float:
    """Give each figure of `cell` its display size at `scale` (output metadata, which nbconvert
    writes out as the image's width and height); return the lines they take."""
    lines = 0.0
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "image/png" in data:
            w, h = _png_size(data["image/png"])
            output.setdefault("metadata", {})["image/png"] = {"width": round(w * scale), "height": round(h * scale)}
            lines += h * scale / LINE_PX + 0.3
    return lines


def _tables_shown(cell) -> int:
    """Tables a shown cell puts on the slide: HTML tables in its outputs, markdown tables in its text."""
    if cell.cell_type == "markdown":
        return len(MD_TABLE.findall(cell.source))
    return sum(bool(_html_table_rows("".join(o.get("data", {}).get("text/html", "")))) for o in cell.get("outputs", []))


def _figures_shown(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", [])) if cell.cell_type == "code" else 0


# ------------------------------------------------------------------ printed tables, shown as HTML tables
# A printed table (columns of aligned text separated by two spaces or more) is shown as an HTML
# table at the deck's table size (22 px), not as 18 px monospace; one too tall for a slide goes on
# as many slides as it needs, its header repeated. What is not part of a table stays printed text.
NUMBER = re.compile(
    r"[-+−]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?\s*(?:x|%|ms|µs|s|nats)?"
    r"(?:\s*(?:±|/)\s*[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?\s*(?:x|%)?)?"
    r"(?:\s*\([-+]?[\d.,]+ to [-+]?[\d.,]+\))?"
)
NUMBER_END, NUMBER_START = set("0123456789.%x)"), set("0123456789-+−.(")
TABLE_CHARS = 88  # characters of a table's row across the slide at 22 px, cell padding included
TABLE_MIN_ROWS = 3


def _columns(lines: list[str]) -> list[tuple[int, int]]:
    """The character spans of the columns shared by `lines`: text separated, in every line, by a
    run of blanks that is two or more wide in that line or in another (a single blank between two
    columns happens where a number fills its column)."""
    width = max(map(len, lines))
    rows = [line.ljust(width + 2) for line in lines]
    blank = [all(r[i] == " " for r in rows) for i in range(width + 2)]

    def separates(i: int) -> bool:
        """A one-blank gap splits columns where another line has a wider gap there and every line
        with just this blank has a number on both sides of it ("19,059 13.06x"), not words."""
        lone = [r for r in rows if r[i - 1] != " " and r[i + 1] != " "] if 0 < i < width else []
        wide = any(i < len(r.rstrip()) and "  " in (r[i - 1 : i + 1], r[i : i + 2]) for r in rows)
        return wide and all(r[i - 1] in NUMBER_END and r[i + 1] in NUMBER_START for r in lone)

    wide = [separates(i) for i in range(width + 2)]
    spans, start, i = [], None, 0
    while i < len(blank):
        if not blank[i]:
            start = i if start is None else start
            i += 1
            continue
        end = next((j for j in range(i, len(blank)) if not blank[j]), len(blank))
        if start is not None and (end - i >= 2 or any(wide[i:end]) or end == len(blank)):
            spans.append((start, i))
            start = None
        i = end
    # "87.0 / 87.0" and "0.85 ± 0.01" are one column: a column of nothing but "/" or "±" joins its neighbours
    k = 1
    while k < len(spans) - 1:
        if all(line[spans[k][0] : spans[k][1]].strip() in ("", "/", "±") for line in lines):
            spans[k - 1 : k + 2] = [(spans[k - 1][0], spans[k + 1][1])]
        else:
            k += 1
    return spans


def _fields(line: str) -> list[tuple[int, int, str]]:
    """The pieces of text of `line` that two blanks or more separate, with their character spans."""
    return [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", line)]


def _is_number(field: str) -> bool:
    return NUMBER.fullmatch(field) is not None


def _header_row(line: str, spans: list[tuple[int, int]]) -> list[str] | None:
    """A header line's text placed in the columns it overlaps most, or lies nearest (headers are
    often wider than, or offset from, the numbers under them); the line's last piece may lie beyond
    the columns and join the last ("test KL  (nats per image)"). None where two pieces otherwise
    land in one column: a line of text, not a header."""
    pieces = _fields(line)
    row = [""] * len(spans)
    for n, (a, b, text) in enumerate(pieces):
        overlap = [min(b, e) - max(a, s) for s, e in spans]
        k = max(range(len(spans)), key=lambda c: (max(overlap[c], 0), -abs((a + b) / 2 - sum(spans[c]) / 2)))
        if row[k] and not (n == len(pieces) - 1 and a >= spans[-1][1]):
            return None
        row[k] = f"{row[k]} {text}".strip()
    return row


def _table(lines: list[str]) -> tuple[list[list[str]], list[list[str]]] | None:
    """`lines` as a table: (header rows, body rows); None where they are not one. The columns are
    those the body rows share (text separated by two blanks or more in every row); leading lines
    with no number after their first column are header rows (:func:`_header_row`)."""
    parts = [[f for _, _, f in _fields(line)] for line in lines]
    head = 0
    while head < len(lines) - 1 and not any(_is_number(f) for f in parts[head][1:]):
        head += 1
    if head == len(lines) - 1 and not any(_is_number(f) for f in parts[head][1:]):
        head = 0  # no row holds a number: no header either
    body_lines = lines[head:]
    spans = _columns(body_lines)
    if len(spans) < 2 or len(body_lines) < 2:
        return None
    body = [[line[a:b].strip() for a, b in spans] for line in body_lines]
    if any("  " in f for row in body for f in row):
        return None
    if not any(sum(map(_is_number, column)) * 2 >= len(body) for column in list(zip(*body, strict=True))[1:]):
        return None  # no column of numbers: aligned text, not a table
    header = [_header_row(line, spans) for line in lines[:head]]
    return None if None in header else (header, body)


def _find_table(lines: list[str]) -> tuple[int, int, list[list[str]], list[list[str]]] | None:
    """The longest run of `lines` that is a table (at least three rows), trimming at most two lines
    of caption or comment at either end: (first, end, header rows, body rows)."""
    n = len(lines)
    for trimmed in range(0, 5):
        for i in range(0, min(2, trimmed) + 1):
            j = n - (trimmed - i)
            if j - i < TABLE_MIN_ROWS or n - j > 2:
                continue
            inner = lines[i:j]
            if not all(re.search(r"\S\s{2,}\S", line.strip()) for line in inner):
                continue
            table = _table(inner)
            if table is not None:
                return i, j, *table
    return None


def _row_lines(rows: list[list[str]]) -> list[float]:
    """Lines each row takes at 22 px, where the table is wider than the slide its widest column wraps."""
    widths = [max(len(r[k]) for r in rows) + 2 for k in range(len(rows[0]))]
    over = sum(widths) - TABLE_CHARS
    if over <= 0:
        return [TABLE_ROW] * len(rows)
    k = max(range(len(widths)), key=widths.__getitem__)
    room = max(12, widths[k] - over)
    return [TABLE_ROW * max(1, math.ceil(len(r[k]) / room)) for r in rows]


def _html_table(head: list[list[str]], body: list[list[str]]) -> str:
    def cells(row, tag):
        return "".join(
            f'<{tag} class="num">{html.escape(f)}</{tag}>'
            if tag == "td" and _is_number(f) and k
            else f"<{tag}>{html.escape(f)}</{tag}>"
            for k, f in enumerate(row)
        )

    thead = "".join(f"<tr>{cells(r, 'th')}</tr>" for r in head)
    tbody = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body)
    return f'<table class="printed-table">{f"<thead>{thead}</thead>" if head else ""}<tbody>{tbody}</tbody></table>'


def _printed(lines: list[str]) -> str:
    return f'<pre class="printed-text">{html.escape(chr(10).join(lines))}</pre>' if lines else ""


def printed_tables(text: str) -> list[tuple[str, float]] | None:
    """Printed output as HTML pieces, each with the lines it takes: its tables as HTML tables (the
    header repeated where a table is cut to fit a slide), the rest as printed text. None where the
    output holds no table."""
    blocks = re.split(r"\n\s*\n", text.strip("\n"))
    pieces: list[tuple[str, float]] = []
    pending: list[str] = []  # printed text waiting to go with the next piece
    found = False
    for block in blocks:
        lines = block.split("\n")
        table = _find_table(lines)
        if table is None:
            pending += lines + [""]
            continue
        found = True
        i, j, head, body = table
        pending += lines[:i]
        heights = _row_lines(head + body)[len(head) :]
        before = OUTPUT_LINE * _wrapped("\n".join(pending), OUTPUT_CHARS) + 0.3 if pending else 0.0
        room = LINES_PER_SLIDE - 2.5 - TABLE_ROW * len(head) - before
        start = 0
        while start < len(body):
            end, used = start, 0.0
            while end < len(body) and (end == start or used + heights[end] <= room):
                used, end = used + heights[end], end + 1
            after = lines[j:] if end == len(body) else []
            lines_used = before + used + TABLE_ROW * len(head) + 0.6
            lines_used += OUTPUT_LINE * _wrapped("\n".join(after), OUTPUT_CHARS) + 0.3 if after else 0.0
            pieces.append((_printed(pending) + _html_table(head, body[start:end]) + _printed(after), lines_used))
            pending, before, start = [], 0.0, end
            room = LINES_PER_SLIDE - 2.5 - TABLE_ROW * len(head)
    if not found:
        return None
    if pending and any(line.strip() for line in pending):
        html_text, lines_used = pieces[-1]
        pieces[-1] = (html_text + _printed(pending), lines_used + OUTPUT_LINE * len(pending))
    return pieces


# ------------------------------------------------------------------ the plan of a deck
class Slide:
    """One slide: its cells (the first starts it), the lines they use, whether it was written for
    the projector (`slide` metadata) or cut from a cell's text by estimate, and its speaker notes."""

    def __init__(self, cells: list, lines: float, written: bool):
        self.cells, self.lines, self.written = cells, lines, written
        self.notes: list[str] = []


class Deck:
    """The slides of one notebook as they are planned, and the notebook's cells in order (the copy
    keeps every cell; cells off the path are skipped)."""

    def __init__(self):
        self.slides: list[Slide] = []
        self.stream: list = []  # cells, and each Slide right after its first cell (its notes go there)
        self.small_figures: list[str] = []  # ids of the cells whose figures are shown under 14 pt

    @property
    def current(self) -> Slide | None:
        return self.slides[-1] if self.slides else None

    def room(self) -> float:
        """Lines left on the current slide, less one for what the estimate misses (tall equations)."""
        return LINES_PER_SLIDE - 1.0 - (self.current.lines if self.current else LINES_PER_SLIDE)

    def start(self, cell, kind: str, lines: float, written: bool) -> None:
        _slide_type(cell, kind)
        self.slides.append(Slide([cell], lines, written))
        self.stream += [cell, self.slides[-1]]

    def join(self, cell, lines: float, kind: str = "-") -> None:
        _slide_type(cell, kind)
        self.current.cells.append(cell)
        self.current.lines += lines
        self.stream.append(cell)

    def note(self, text: str) -> None:
        self.current.notes.append(text)

    def skip(self, cell) -> None:
        _slide_type(cell, "skip")
        self.stream.append(cell)

    def cells(self) -> list:
        """The copy's cells: each slide's notes right after its first cell (reveal.js shows notes
        inside a fragment only while that fragment is current)."""
        out = []
        for entry in self.stream:
            if not isinstance(entry, Slide):
                out.append(entry)
                continue
            first = entry.cells[0]
            for k, text in enumerate(entry.notes):
                notes = nbformat.v4.new_markdown_cell(text, metadata={"slideshow": {"slide_type": "notes"}})
                notes.id = f"{first.get('id', 'cell')[:48]}-notes{k}"
                out.append(notes)
            if DEBUG:  # the estimate, as data-lines on the slide's <section>, to compare with the browser
                first.metadata["slideshow"]["data"] = {"lines": f"{entry.lines:.1f}"}
        return out


def _slide_type(cell, kind: str) -> None:
    cell.metadata["slideshow"] = {"slide_type": kind}


def _piece(cell, source: str, suffix: str):
    """A markdown cell of the copy made from part of `cell` (same tags, a stable id)."""
    metadata = copy.deepcopy(cell.metadata)
    metadata.pop(lp.SLIDE_KEY, None)
    piece = nbformat.v4.new_markdown_cell(source, metadata=metadata)
    piece.id = f"{cell.get('id', 'cell')[:48]}-{suffix}"
    return piece


def _text_block_lines(source: str) -> float:
    return sum(block_lines(b) for b in markdown_blocks(source)) + 0.3  # and the cell's own padding


def _add_written(deck: Deck, cell, text, title: bool = True) -> None:
    """A cell with `slide` metadata: its slide (fragments for a list), its text as notes. The
    title cell (`title` False) has its heading and notes on the title slide already."""
    items = [text] if isinstance(text, str) else [t for t in text if t.strip()]
    heading = lp.heading_line(cell.source) if title else None
    if not heading and not any(t.strip() for t in items):  # "": notes to the slide before
        if title:
            deck.note(cell.source)
        return
    first = "\n\n".join(x for x in (heading, items[0] if items else "") if x)
    deck.start(_piece(cell, first, "slide"), "slide", _text_block_lines(first), written=True)
    if title:
        deck.note(cell.source)
    for k, item in enumerate(items[1:], start=1):
        deck.join(_piece(cell, item, f"step{k}"), _text_block_lines(item), kind="fragment")


def _add_cut(deck: Deck, cell, source: str) -> None:
    """A tagged markdown cell without `slide` metadata: its own text, cut to fit (the behaviour
    before the metadata existed)."""
    groups: list[list[str]] = []  # blocks that go on one slide together, one cell each
    for block in markdown_blocks(source):
        m = HEADING.match(block)
        starts = m is not None and len(m.group(1)) <= 3
        # A heading stays with what follows it; an equation, text going on with a small letter
        # ("where ..."), or what a line ending in ":" announces, stays with the text before it,
        # if they fit on one slide together.
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
        piece = _piece(cell, text, str(k))
        m = HEADING.match(group[0])
        if "NBVAL" in text and m is None:
            deck.note(text)  # how the tests treat a cell: speaker notes, not a slide
            continue
        lines = sum(block_lines(b) for b in group)
        level = len(m.group(1)) if m else None
        current = deck.current
        if level is not None and level <= 2:
            deck.start(piece, "slide", lines, written=False)
        elif level == 3 or current.written or current.lines + lines > LINES_PER_SLIDE:
            deck.start(piece, "slide" if current.written else "subslide", lines, written=False)
        else:
            deck.join(piece, lines)


def _tables_as_html(cell) -> list[str]:
    """Show the printed tables of `cell`'s output as HTML tables (:func:`printed_tables`); return
    the parts of a table too tall for one slide that go on slides of their own."""
    merged = []  # what one print after another wrote is one text (a notebook may store it in pieces)
    for output in cell.outputs:
        last = merged[-1] if merged else None
        if last and output.get("output_type") == last.get("output_type") == "stream" and output.name == last.name:
            merged[-1] = nbformat.v4.new_output("stream", name=last.name, text=last.text + output.text)
        else:
            merged.append(output)
    outputs, more = [], []
    for output in merged:
        pieces = printed_tables(output.get("text", "")) if output.get("output_type") == "stream" else None
        if not pieces:
            outputs.append(output)
            continue
        data = {"text/html": pieces[0][0], "text/plain": output["text"]}
        outputs.append(nbformat.v4.new_output("display_data", data=data, metadata={"slide_lines": pieces[0][1]}))
        more += [text for text, _ in pieces[1:]]
    cell.outputs = outputs
    return more


def _add_code(deck: Deck, cell, points: float = 14.0) -> None:
    """A tagged code cell: skipped without output; else its output on the slide before when it
    fits there with its figures at least at their natural size and their type (`points`, see
    :func:`type_points`) at 14 pt or more, or on a slide of its own, its figures filling it."""
    if not lp.has_output(cell):
        deck.skip(cell)
        return
    cell.source = nc.strip_test_markers(cell.source)
    more = _tables_as_html(cell)
    code_lines = cell.source.splitlines()
    n_code = len(code_lines)
    has_figure = any("image/png" in o.get("data", {}) for o in cell.outputs)
    printing = sum(line.lstrip().startswith("print(") for line in code_lines) >= n_code / 2
    tabled = any("slide_lines" in o.get("metadata", {}) for o in cell.outputs)
    if has_figure or tabled or n_code > CODE_SHOWN_MAX or printing:
        cell.metadata.setdefault("tags", []).append(HIDE_INPUT)
        cell.metadata.setdefault("jupyter", {})["source_hidden"] = True  # JupyterLab, and so RISE
        code = 0.0
    else:
        code = CODE_LINE * sum(max(1, math.ceil(len(line) / CODE_CHARS)) for line in code_lines) + 0.6
    other, figures = _measure_outputs(cell)
    room = deck.room() - code - other
    scale = _figure_scale(figures, room, FIGURE_UPSCALE)
    if room > 0 and scale >= max(MIN_FIGURE_SCALE, _readable_scale(cell, points)):
        deck.join(cell, code + other + _size_figures(cell, scale))
    else:
        scale = _figure_scale(figures, LINES_PER_SLIDE - code - other, FIGURE_ALONE_UPSCALE)
        if figures and scale < _readable_scale(cell, points):  # even a slide of its own is too small
            deck.small_figures.append(cell.get("id", ""))
        kind = "slide" if deck.current.written else "subslide"
        deck.start(cell, kind, code + other + _size_figures(cell, max(scale, 0.3)), written=deck.current.written)
    for k, table in enumerate(more, start=1):  # the rest of a table too tall for one slide
        piece = nbformat.v4.new_markdown_cell(table, metadata={"tags": [TAG]})
        piece.id = f"{cell.get('id', 'cell')[:48]}-table{k}"
        deck.start(piece, "slide", LINES_PER_SLIDE - 1.0, written=deck.current.written)


# ------------------------------------------------------------------ the title slide
def _first_lines(markdown: str, label: str) -> str | None:
    """The text after `**label**` in `markdown`: the rest of its line and what continues it, or the
    list right under it; None where the label is absent."""
    lines = markdown.splitlines()
    for k, line in enumerate(lines):
        m = re.match(rf"^\s*\*\*{re.escape(label)}\*\*\s*:?\s*(.*)$", line, re.I)
        if not m:
            continue
        out = [m.group(1)] if m.group(1).strip() else []
        for nxt in lines[k + 1 :]:
            if not nxt.strip() or (out and nxt.lstrip().startswith("**")) or (not out and not ITEM.match(nxt)):
                break
            out.append(nxt)
        return "\n".join(out).strip() or None
    return None


def title_cell() -> nbformat.NotebookNode:
    """The deck's title slide (filled in by :func:`_fill_title` once the deck is planned)."""
    cell = nbformat.v4.new_markdown_cell("", metadata={"tags": [TAG, "deck-title"]})
    cell.id = "deck-title"
    return cell


def _fill_title(cell, title: str, first_source: str, numbers: dict) -> None:
    parts = [f"# {title}", f"**Lecture**: about {numbers['minutes']:.0f} minutes, {numbers['slides']} slides"]
    reading = _first_lines(first_source, "Reading time")
    if reading:
        parts.append(f"**Reading time** of the notebook: {reading}")
    know = _first_lines(first_source, "What you need to know")
    if know:
        parts.append(f"**What you need to know**:{chr(10) if ITEM.match(know) else ' '}{know}")
    cell.source = "\n\n".join(parts)


# ------------------------------------------------------------------ the copy
def plan(nb: nbformat.NotebookNode, name: str = "the notebook") -> tuple[nbformat.NotebookNode, dict]:
    """The slide copy of `nb` (see the module docstring) and the deck's numbers: slides, figures
    and tables shown, words of speaker notes, estimated minutes."""
    if not any(is_lecture(c) for c in nb.cells):
        raise SystemExit(
            f"{name}: no cell is tagged {TAG!r}, so there is nothing to put"
            " on slides; tag the cells of its lecture path (tools/lecture_path.py --check says what a path needs)"
        )
    nb = nc.static_outputs(copy.deepcopy(nb))
    deck = Deck()
    name = nc.title(nb) or "(untitled)"
    first = next(c for c in nb.cells if is_lecture(c))
    is_title = first.cell_type == "markdown" and lp.heading_line(first.source) is not None
    title_slide = title_cell()
    deck.start(title_slide, "slide", 11.0, written=True)
    notes_words = 0
    points = type_points(nb)
    for k, cell in enumerate(nb.cells):
        if not is_lecture(cell):
            deck.skip(cell)
        elif cell.cell_type == "markdown":
            notes_words += lp.spoken_words(cell.source)
            text = lp.slide_text(cell)
            if cell is first and is_title:  # the title slide has its heading; its text is the notes
                deck.note(cell.source)
                if text is None:  # the rest of its text, cut to fit
                    _add_cut(deck, cell, cell.source.lstrip("\n").partition("\n")[2])
                else:
                    _add_written(deck, cell, text, title=False)
            elif text is None:
                _add_cut(deck, cell, cell.source)
            else:
                _add_written(deck, cell, text)
        else:
            _add_code(deck, cell, points[k])
    shown = [c for s in deck.slides for c in s.cells]
    numbers = {
        "slides": len(deck.slides),
        "figures_and_tables": sum(_figures_shown(c) + _tables_shown(c) for c in shown),
        "notes_words": notes_words,
        "small_figures": deck.small_figures,
    }
    numbers["minutes"] = lp.minutes(numbers["notes_words"], numbers["figures_and_tables"], numbers["slides"])
    _fill_title(title_slide, name, first.source if is_title else "", numbers)
    nb.cells = deck.cells()
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
    return nb, numbers


def slide_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The slide copy of `nb` (see :func:`plan`)."""
    return plan(nb)[0]


def deck_numbers(nb: nbformat.NotebookNode) -> dict:
    """The deck's slides, figures and tables, words of speaker notes and estimated minutes."""
    return plan(nb)[1]


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


def write_deck(path: Path, out: Path, exp: SlidesExporter | None = None) -> tuple[Path, dict]:
    """Write the slide copy and the deck of the notebook at `path` into `out`; return the deck
    and its numbers (:func:`plan`)."""
    nb, numbers = plan(nc.read(path), name=nc.shown(path).as_posix())
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / path.name)  # links to the other notebooks' copies beside it, for RISE
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = nc.relink(cell.source, _deck_link)
    body, _ = (exp or exporter()).from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    deck = out / path.name.replace(".ipynb", ".slides.html")
    deck.write_text(body, encoding="utf-8")
    return deck, numbers


def write_index(decks: list[tuple[Path, str, dict]], out: Path) -> Path:
    """A page listing the decks (`(path, title, numbers)` each) with their length, slide count and
    handout; the decks' "Series overview" links here."""
    rows = []
    for deck, name, numbers in decks:
        pdf = deck.with_name(deck.name.replace(".slides.html", ".pdf"))
        handout = f'<a href="{pdf.name}">PDF</a>' if pdf.is_file() else "(no PDF: see `make slides`)"
        rows.append(
            f'<tr><td><a href="{deck.name}">{html.escape(name)}</a></td>'
            f"<td>about {numbers['minutes']:.0f} min</td><td>{numbers['slides']}</td><td>{handout}</td></tr>"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Lecture slides</title>\n'
        "<style>body{font-family:sans-serif;max-width:56em;margin:3em auto;font-size:1.2em}"
        "td,th{padding:.3em .8em;text-align:left}</style></head>\n"
        "<body><h1>Variational autoencoders: lecture slides</h1>\n"
        "<table><thead><tr><th>Lecture</th><th>Length</th><th>Slides</th><th>Handout</th></tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n"
        "<p>Length: the estimate of tools/lecture_path.py (words of speaker notes at 110 a minute, a minute "
        "per figure or table, half a minute per slide).</p>\n"
        "<p>Keys: right arrow or space for the next slide or step (every slide, in order), left arrow back, "
        "<kbd>S</kbd> for the speaker notes (the notebook's full text), <kbd>Esc</kbd> for the overview, "
        "<kbd>F</kbd> for full screen.</p></body></html>\n"
    )
    target = out / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


# ------------------------------------------------------------------ handouts
PDF_TIMEOUT_S = 180
PDF_TRIES = 4


def find_chromium() -> str | None:
    """Chromium (or Chrome) on PATH, as the tests find it."""
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def pdf_pages(pdf: Path) -> int:
    """The number of pages of a PDF Chromium wrote (its page objects are not compressed)."""
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))


def _print_command(chromium: str, profile: str, pdf: Path, port: int, deck: Path) -> list[str]:
    """Headless Chromium printing `deck`'s print view to `pdf`, with its own profile and no host but 127.0.0.1."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=60000",
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}",
        f"http://127.0.0.1:{port}/{deck.name}?print-pdf",
    ]


_RUN = {"capture_output": True, "text": True, "timeout": PDF_TIMEOUT_S}


def write_pdfs(decks: list[Path], out: Path, slides: list[int] | None = None) -> list[Path]:
    """Print each deck's print view (`?print-pdf`) to `NN_name.pdf` beside it with headless
    Chromium, served from 127.0.0.1 with every other host unreachable; return the PDFs. Where
    `slides` gives each deck's slide count, a PDF with another number of pages (printed before
    the deck had laid itself out, on a busy machine) is printed again, up to PDF_TRIES times.
    Prints one line and returns [] where no Chromium is installed."""
    chromium = find_chromium()
    if chromium is None:
        print("no chromium, chromium-browser or google-chrome on PATH: PDF handouts skipped")
        return []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    made = []
    try:
        for deck in decks:
            pdf = deck.with_name(deck.name.replace(".slides.html", ".pdf"))
            pdf.unlink(missing_ok=True)
            want = slides[decks.index(deck)] if slides else None
            for _ in range(PDF_TRIES):
                # a fresh Chromium profile for every try: with one profile per deck, all of a deck's tries could print
                # one blank page (seen with 03b after 03, 07 after 06b, 07b after 07); fresh ones make tries independent
                with tempfile.TemporaryDirectory() as profile:
                    result = subprocess.run(_print_command(chromium, profile, pdf, port, deck), **_RUN)
                if result.returncode == 0 and pdf.is_file() and want in (None, pdf_pages(pdf)):
                    break
            if result.returncode != 0 or not pdf.is_file():
                print(f"{nc.shown(deck)}: Chromium printed no PDF: {result.stderr.strip()[-300:]}")
                continue
            made.append(pdf)
            pages = pdf_pages(pdf)
            print(f"{nc.shown(pdf)}: {pages} pages" + ("" if want in (None, pages) else f" for {want} slides"))
    finally:
        server.shutdown()
        server.server_close()
    return made


def main(argv: list[str] | None = None) -> int:
    parser = nc.arguments(__doc__, "slides")
    parser.add_argument("--no-pdf", action="store_true", help="do not print the PDF handouts")
    args = parser.parse_args(argv)
    paths = nc.series(args.notebooks)
    copy_assets(args.out)
    exp = exporter()
    decks = []
    for path in paths:
        deck, numbers = write_deck(path, args.out, exp)
        decks.append((deck, nc.title(nc.read(path)) or "(untitled)", numbers))
        print(f"{nc.shown(deck)}: {lp.describe(numbers)}")
    write_index(decks, args.out)  # first without the handouts, so that a deck's link to it works
    link_siblings(paths, args.out)
    if args.no_pdf:
        print("--no-pdf: PDF handouts not printed")
    elif write_pdfs([d for d, _, _ in decks], args.out, [n["slides"] for _, _, n in decks]):
        write_index(decks, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
