"""Every notebook of the series, read as a document: structure, stored outputs, portability.

(`make test` also runs each notebook under strict nbval, which re-executes it in a fresh
kernel and compares its outputs with the stored ones.)
"""

import json
import re

import pytest
from helpers import NOTEBOOKS, REPO

ABSOLUTE_PATH = re.compile(r"(/work/|/root/|/home/\w+|/Users/\w+|[A-Z]:\\\\|/tmp/ipykernel|site-packages)")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _text(cell) -> str:
    return "".join(cell.get("source", ""))


def _markdown(path) -> list[str]:
    return [_text(c) for c in _cells(path) if c["cell_type"] == "markdown"]


def _code(path):
    return [c for c in _cells(path) if c["cell_type"] == "code" and _text(c).strip()]


def test_the_series_has_notebooks_numbered_without_gaps():
    """01, 02, 02b, 03, ...: the numbers run without gaps; a notebook in parts adds b, c, ... in order."""
    names = [p.name for p in NOTEBOOKS]
    parts = [re.match(r"(\d\d)([a-z]?)_", name).groups() for name in names]
    numbers = sorted({int(n) for n, _ in parts})
    assert numbers == list(range(1, len(numbers) + 1)), names
    for number in numbers:
        letters = [letter for n, letter in parts if int(n) == number]
        assert letters == ["", "b", "c", "d"][: len(letters)], names


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request):
    return request.param


def test_opens_with_title_goals_and_prerequisites(notebook):
    head = "\n".join(_markdown(notebook)[:3]).lower()
    assert re.match(r"#\s+\S", _markdown(notebook)[0]), "the first cell must be a '# Title'"
    assert "what you will learn" in head, "state the learning goals at the top"
    assert "what you need to know" in head, "state the prerequisites at the top"


def test_ends_with_summary_and_exercises(notebook):
    md = "\n".join(_markdown(notebook)).lower()
    assert re.search(r"^##\s+summary", md, re.M), "a '## Summary' section is missing"
    assert re.search(r"^##\s+exercises", md, re.M), "a '## Exercises' section is missing"
    assert md.rfind("## summary") > len(md) // 2, "the summary belongs at the end"


def test_links_to_its_neighbours(notebook):
    md = "\n".join(_markdown(notebook))
    i = NOTEBOOKS.index(notebook)
    if i > 0:
        assert f"({NOTEBOOKS[i - 1].name})" in md, f"no link to the previous notebook {NOTEBOOKS[i - 1].name}"
    if i + 1 < len(NOTEBOOKS):
        assert f"({NOTEBOOKS[i + 1].name})" in md, f"no link to the next notebook {NOTEBOOKS[i + 1].name}"


def test_is_stored_executed_in_order_from_a_fresh_kernel(notebook):
    counts = [c.get("execution_count") for c in _code(notebook)]
    assert None not in counts, "some code cells were never run: run `make run` and commit"
    assert counts == list(range(1, len(counts) + 1)), "run it top to bottom in a fresh kernel (`make run`)"


def test_has_no_error_outputs(notebook):
    for cell in _code(notebook):
        expected = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            assert expected or out["output_type"] != "error", f"error output in: {_text(cell)[:80]!r}"


def test_names_no_machine_paths(notebook):
    for cell in _cells(notebook):
        assert not ABSOLUTE_PATH.search(_text(cell)), f"absolute path in source: {_text(cell)[:80]!r}"
        for out in cell.get("outputs", []):
            blob = json.dumps(out.get("text", "")) + json.dumps(out.get("data", {}).get("text/plain", ""))
            m = ABSOLUTE_PATH.search(blob)
            assert not m, f"an output shows a machine path ({m.group(0)}...)"


def test_does_not_import_tensorflow(notebook):
    """TensorFlow costs about 500 MB on import: half of a Binder session."""
    for cell in _code(notebook):
        assert not re.search(r"^\s*(import|from)\s+tensorflow", _text(cell), re.M)


def test_every_figure_cell_sets_a_title_and_axis_labels_or_uses_vae_lib_plotting(notebook):
    for cell in _code(notebook):
        src = _text(cell)
        shows = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        if not shows or "vae_lib.plotting" in src or re.search(r"\bplotting\.\w+\(", src):
            continue
        assert re.search(r"set_title|title\(|suptitle", src), f"figure without a title: {src[:80]!r}"
        assert re.search(r"set_xlabel|xlabel\(|set_ylabel|ylabel\(|supxlabel|supylabel", src), (
            f"figure without axis labels: {src[:80]!r}"
        )


def test_every_figure_has_words_next_to_it(notebook):
    """A markdown cell within two cells of each figure says what to see in it."""
    cells = _cells(notebook)
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        if any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            near = [cells[j] for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < len(cells)]
            assert any(c["cell_type"] == "markdown" for c in near), (
                f"a figure with no explanation next to it: {_text(cell)[:80]!r}"
            )


def _prints_text(cell) -> bool:
    return any(
        o["output_type"] == "stream" or ("text/plain" in o.get("data", {}) and "image/png" not in o["data"])
        for o in cell.get("outputs", [])
    )


def _ignored(cell) -> bool:
    return _text(cell).startswith("# NBVAL_IGNORE_OUTPUT")


def test_most_cells_with_text_output_stay_compared_by_nbval(notebook):
    """Only machine-dependent cells are excluded from the comparison, not the series' output wholesale."""
    printing = [c for c in _code(notebook) if _prints_text(c)]
    ignored = [c for c in printing if _ignored(c)]
    assert len(ignored) < len(printing) / 2, (
        f"{len(ignored)} of {len(printing)} cells with text output are not compared"
    )


def test_says_once_near_the_top_why_some_cells_are_not_compared(notebook):
    if any(_ignored(c) for c in _code(notebook)):
        head = "\n".join(_markdown(notebook)[:3])
        assert "NBVAL_IGNORE_OUTPUT" in head, "explain near the top why some outputs are not compared"


def test_every_claims_check_has_its_stored_verdict(notebook):
    """Each claims.expect* call in a compared cell left its machine-independent verdict line."""
    for cell in _code(notebook):
        calls = len(re.findall(r"\bclaims\.expect\w*\(", _text(cell)))
        if calls and not _ignored(cell):
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o["output_type"] == "stream")
            verdicts = [line for line in text.splitlines() if line.endswith((" as stated", ": holds"))]
            assert len(verdicts) == calls, f"{calls} checks but {len(verdicts)} verdicts in {_text(cell)[:60]!r}"
            assert not any(o["output_type"] == "execute_result" for o in cell.get("outputs", [])), (
                f"a check cell displays a computed value (Out[...]): {_text(cell)[:60]!r}"
            )


def test_tags_a_lecture_path_that_opens_with_the_title_and_keeps_each_section(notebook):
    """The cells tagged `lecture` (a 75-minute lecture) start at the title and cover the sections."""
    cells = _cells(notebook)
    tagged = [i for i, c in enumerate(cells) if "lecture" in c.get("metadata", {}).get("tags", [])]
    assert tagged, "no cell is tagged `lecture`"
    assert tagged[0] == 0, "the lecture path must open with the title cell"
    sections = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and re.search(r"^## \d", _text(c), re.M)]
    untagged = [_text(cells[i]).splitlines()[0] for i in sections if i not in tagged]
    assert not untagged, f"numbered sections missing from the lecture path: {untagged}"
    assert len(tagged) < 0.7 * len(cells), "the lecture path should leave the self-study cells out"


MAX_CELLS, MAX_MARKDOWN_WORDS = 65, 4000  # one sitting


def _reading_time(path) -> int:
    match = re.search(r"\*\*Reading time\*\*: about (\d+) minutes", _markdown(path)[0])
    assert match, f"{path.name}: the first cell must say '**Reading time**: about N minutes'"
    return int(match.group(1))


def test_fits_one_sitting(notebook):
    cells, words = len(_cells(notebook)), sum(len(m.split()) for m in _markdown(notebook))
    assert cells <= MAX_CELLS and words <= MAX_MARKDOWN_WORDS, f"{notebook.name}: {cells} cells, {words} words"


def test_states_its_reading_time_by_the_series_rule(notebook):
    """150 words of text and 100 of code a minute, a minute per figure, up to the exercises (README)."""
    text = code = figures = 0
    for cell in _cells(notebook):
        source = _text(cell)
        if cell["cell_type"] == "markdown" and re.match(r"#+\s*Exercises", source.strip()):
            break
        if cell["cell_type"] == "markdown":
            text += len(source.split())
        else:
            code += len(source.split())
            figures += sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
    minutes = text / 150 + code / 100 + figures
    assert abs(_reading_time(notebook) - minutes) <= 2, f"{notebook.name}: the rule gives {minutes:.1f} minutes"


def test_the_readme_gives_each_notebook_its_own_reading_time(notebook):
    readme = (REPO / "README.md").read_text()
    row = re.search(rf"\(notebooks/{re.escape(notebook.name)}\).*\| about (\d+) min \|", readme)
    assert row, f"README's table has no row for {notebook.name}"
    assert int(row.group(1)) == _reading_time(notebook), f"{notebook.name}: README says {row.group(1)} minutes"
