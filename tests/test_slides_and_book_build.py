"""tools/build_slides.py and tools/build_book.py without a browser: how lecture cells become
slides, what the copies change, and that the built pages load nothing from the network.
(tests/test_slides_book_browser.py opens them in Chromium.)"""

import re

import nbformat
import pytest
from helpers import NOTEBOOKS, REPO, load_script, png

# A tag that loads something: <script src>, <link href> (style sheets, icons, preloads), <img src>, ...
LOADING_TAG = re.compile(r"<(script|link|img|iframe|source|video|audio|embed)\b[^>]*?\b(src|href)=\"([^\"]*)\"", re.I)


@pytest.fixture(scope="module")
def slides():
    return load_script("tools/build_slides.py")


@pytest.fixture(scope="module")
def book():
    return load_script("tools/build_book.py")


@pytest.fixture(scope="module")
def copies():
    return load_script("tools/notebook_copies.py")


def _lecture(cell):
    cell.metadata["tags"] = ["lecture"]
    return cell


def _notebook():
    """Title, a section with a long paragraph run, a figure, a print, a widget, an exercise."""
    v4 = nbformat.v4
    prose = " ".join(["A sentence of ordinary length about the evidence lower bound $\\log p(x)$."] * 8)
    figure = v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\nplt.plot(x)\nplt.show()")
    figure.outputs = [v4.new_output("display_data", data={"image/png": png(600, 300), "text/plain": "<Figure>"})]
    printing = v4.new_code_cell("print(1)\nprint(2)")
    printing.outputs = [v4.new_output("stream", name="stdout", text="1\n2\n")]
    widget = v4.new_code_cell("explorer = widgets.interact(f, z=slider)")
    widget.outputs = [
        v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "ab", "version_major": 2, "version_minor": 0},
                "text/plain": "interactive(children=(FloatSlider(value=0.0),))",
            },
        )
    ]
    bar = v4.new_code_cell("fit()")
    bar.outputs = [
        v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "cd"},
                "text/plain": "training: 100%|##| 9/9",
            },
        )
    ]
    solution = v4.new_code_cell("answer = 42", metadata={"jupyter": {"source_hidden": True}})
    cells = [
        _lecture(v4.new_markdown_cell("# 01 · A title\n\n[02 next →](02_next.ipynb) · [overview](../README.md)")),
        v4.new_code_cell("import numpy as np"),
        _lecture(v4.new_markdown_cell("## 1. A section\n\n" + "\n\n".join([prose] * 6))),
        _lecture(figure),
        _lecture(
            v4.new_markdown_cell("### 1.1 A subsection\n\nSome text.\n\nCells marked `# NBVAL_IGNORE_OUTPUT` vary.")
        ),
        _lecture(printing),
        widget,
        bar,
        v4.new_markdown_cell("## Exercises\n\n<details><summary>Solution</summary>\n\n$x = 1$\n\n</details>"),
        solution,
    ]
    return v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})


def _kinds(nb):
    return [(c.metadata["slideshow"]["slide_type"], c.source.splitlines()[0][:30]) for c in nb.cells]


def test_markdown_is_cut_at_paragraphs_never_inside_fences_math_or_details(slides):
    text = "\n".join(
        [
            "First paragraph.",
            "",
            "```python",
            "x = 1",
            "",
            "y = 2",
            "```",
            "",
            "$$",
            "a",
            "",
            "b",
            "$$",
            "",
            "<details><summary>S</summary>",
            "",
            "inside",
            "",
            "</details>",
            "### A heading",
            "- item",
            "",
            "  its continuation",
        ]
    )
    blocks = slides.markdown_blocks(text)
    assert blocks[0] == "First paragraph."
    assert blocks[1].startswith("```python") and blocks[1].endswith("```") and "y = 2" in blocks[1]
    assert blocks[2].startswith("$$") and blocks[2].endswith("$$")
    assert blocks[3].startswith("<details>") and blocks[3].endswith("</details>")
    assert blocks[4] == "### A heading"
    assert blocks[5] == "- item\n\n  its continuation"  # an indented continuation stays with its item
    long_list = "\n".join(f"{i}. " + "word " * 40 for i in range(1, 6))
    assert [b.split(".")[0] for b in slides.markdown_blocks(long_list)] == ["1", "2", "3", "4", "5"]


def test_lecture_cells_without_slide_text_are_cut_as_before_and_the_rest_is_skipped(slides):
    nb = slides.slide_notebook(_notebook())
    kinds = _kinds(nb)
    assert kinds[0] == ("slide", "# 01 · A title")  # the title slide the builder writes
    assert ("skip", "import numpy as np") in kinds
    assert ("slide", "## 1. A section") in kinds
    assert sum(k == "subslide" for k, s in kinds if s.startswith("A sentence")) >= 2  # the long run is cut
    assert ("subslide", "### 1.1 A subsection") in kinds
    assert [k for k, s in kinds if "NBVAL" in s] == ["notes"]  # about the tests: a speaker note, not a slide
    assert all(k == "skip" for k, s in kinds if s.startswith(("## Exercises", "answer", "explorer", "fit(")))
    assert nb.metadata["rise"]["width"] == 1280 and nb.metadata["rise"]["height"] == 720


# ------------------------------------------------------------------ slides written for the projector
def _written(*cells):
    """A notebook: a title cell with the two lines the title slide shows, then `cells`."""
    v4 = nbformat.v4
    first = "# 03 · Estimators\n\nIntro.\n\n**Reading time**: about 50 minutes\n\n**What you need to know**: the ELBO."
    title = _lecture(v4.new_markdown_cell(first))
    title.metadata["slide"] = ""
    return v4.new_notebook(cells=[title, *cells])


def _md(text, slide):
    cell = _lecture(nbformat.v4.new_markdown_cell(text))
    cell.metadata["slide"] = slide
    return cell


def _shown(nb):
    return [c for c in nb.cells if c.metadata["slideshow"]["slide_type"] not in ("skip", "notes")]


def test_a_slide_shows_its_slide_text_under_the_cell_s_heading_and_the_cell_becomes_its_notes(slides):
    cell = _md("## 2. The bound\n\nA long paragraph a lecturer says.", "$$\\log p(x) \\ge \\mathcal{L}$$")
    nb = slides.slide_notebook(_written(cell))
    kinds = [(c.metadata["slideshow"]["slide_type"], c.source) for c in nb.cells]
    k = kinds.index(("slide", "## 2. The bound\n\n$$\\log p(x) \\ge \\mathcal{L}$$"))
    assert kinds[k + 1] == ("notes", cell.source)
    assert "slide" not in nb.cells[k].metadata  # the copy carries what the deck shows, not the metadata


def test_a_list_of_slide_text_becomes_one_slide_built_up_in_fragments(slides):
    nb = slides.slide_notebook(_written(_md("Derivation.", ["$$a = b$$", "$$b = c$$", "So $a = c$."])))
    kinds = [(c.metadata["slideshow"]["slide_type"], c.source) for c in nb.cells]
    start = kinds.index(("slide", "$$a = b$$"))
    assert kinds[start + 1] == ("notes", "Derivation.")  # notes before the steps, never inside one
    assert kinds[start + 2 :] == [("fragment", "$$b = c$$"), ("fragment", "So $a = c$.")]


def test_empty_slide_text_adds_the_cell_to_the_notes_of_the_slide_before(slides):
    nb = slides.slide_notebook(_written(_md("## 1. One", "First."), _md("More to say.", "")))
    kinds = [(c.metadata["slideshow"]["slide_type"], c.source) for c in nb.cells]
    assert kinds[-3:] == [("slide", "## 1. One\n\nFirst."), ("notes", "## 1. One"), ("notes", "More to say.")]


def test_code_without_output_is_skipped_and_code_with_output_is_shown(slides):
    quiet = _lecture(nbformat.v4.new_code_cell("x = 1"))
    loud = _lecture(nbformat.v4.new_code_cell("x"))
    loud.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=1)]
    nb = slides.slide_notebook(_written(_md("## 1. One", "First."), quiet, loud))
    kinds = {c.source: c.metadata["slideshow"]["slide_type"] for c in nb.cells}
    assert kinds["x = 1"] == "skip" and kinds["x"] == "-"


def _figure_cell(width, height):
    cell = _lecture(nbformat.v4.new_code_cell("plt.plot(x)"))
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png(width, height)})]
    return cell


def test_a_figure_that_fits_under_short_text_stays_there_at_least_at_its_natural_size(slides):
    nb = slides.slide_notebook(_written(_md("## 1. One", "A short statement."), _figure_cell(600, 300)))
    figure = next(c for c in nb.cells if c.source == "plt.plot(x)")
    size = figure.outputs[0].metadata["image/png"]
    assert figure.metadata["slideshow"]["slide_type"] == "-" and size["width"] >= 600


def test_a_figure_with_no_room_left_gets_a_slide_of_its_own_and_fills_its_height(slides):
    nb = slides.slide_notebook(_written(_md("## 1. One", "A short statement."), _figure_cell(900, 600)))
    figure = next(c for c in nb.cells if c.source == "plt.plot(x)")
    size = figure.outputs[0].metadata["image/png"]
    assert figure.metadata["slideshow"]["slide_type"] == "slide"
    assert 600 < size["height"] <= slides.LINES_PER_SLIDE * slides.LINE_PX and size["width"] <= slides.FIGURE_MAX_W


ROWS = [
    ("estimator", "variance", "x pathwise"),
    ("pathwise", "2.68", "1"),
    ("score, no baseline", "1.21e+08", "4.51e+04"),
    ("score, best baseline", "87.0 / 87.0", "0.85 ± 0.01"),
]
# as the notebooks print tables: labels left-aligned, numbers right-aligned, two blanks or more apart
PRINTED_TABLE = "\n".join(
    ["a caption that is not part of the table"]
    + [f"{a:<22}{b:>12}{c:>13}" for a, b, c in ROWS]
    + ["a closing remark: also printed text", ""]
)


def _cells(html_text):
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", html_text)]


def test_a_printed_table_becomes_an_html_table_with_its_header_and_right_aligned_numbers(slides):
    [(html_text, lines)] = slides.printed_tables(PRINTED_TABLE)
    assert _cells(html_text) == [list(row) for row in ROWS]
    assert "<thead><tr><th>estimator</th>" in html_text and '<td class="num">2.68</td>' in html_text
    assert "<td>pathwise</td>" in html_text  # the first column's labels stay left-aligned
    assert html_text.index("a caption") < html_text.index("<table") < html_text.index("a closing remark")
    assert 0 < lines < slides.LINES_PER_SLIDE


def test_printed_output_without_a_table_is_left_as_it_is(slides):
    code = "def join(processes):\n    import jax\n\n    if processes is None:  # a comment\n        return\n"
    assert slides.printed_tables(code) is None
    assert slides.printed_tables("call 1:  1448.2 ms\ncall 2:  6.7 ms\n") is None  # two rows: no table
    assert slides.printed_tables("one line of text\nanother line\nand a third\n") is None


def test_a_printed_table_too_tall_for_a_slide_continues_on_the_next_with_its_header(slides):
    rows = "\n".join(f"run {k:<3}   {k * 1.5:8.2f}   {k * 2:6d}" for k in range(60))
    pieces = slides.printed_tables(f"{'run':<7}   {'loss':>8}   {'steps':>6}\n" + rows + "\n")
    assert len(pieces) >= 3
    tables = [_cells(html_text) for html_text, _ in pieces]
    assert all(t[0] == ["run", "loss", "steps"] for t in tables)
    assert [r[0] for t in tables for r in t[1:]] == [f"run {k}" for k in range(60)]
    assert all(lines <= slides.LINES_PER_SLIDE for _, lines in pieces)


def test_a_cell_s_printed_table_is_shown_as_html_and_its_rest_on_slides_of_its_own(slides):
    rows = "\n".join(f"run {k:<3}   {k * 1.5:8.2f}   {k * 2:6d}" for k in range(60))
    cell = _lecture(nbformat.v4.new_code_cell("print(table)"))
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"{'run':<7}   {'loss':>8}   {'steps':>6}\n" + rows + "\n")
    ]
    nb = slides.slide_notebook(_written(_md("## 1. One", "A short statement."), cell))
    shown = next(c for c in nb.cells if c.source == "print(table)")
    assert shown.outputs[0].output_type == "display_data" and "<table" in shown.outputs[0].data["text/html"]
    assert slides.HIDE_INPUT in shown.metadata["tags"]  # the table is the point, not the code that prints it
    assert (
        shown.outputs[0].data["text/plain"].startswith("run           loss")
    )  # the printed text, for RISE and the copy
    rest = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("<table")]
    assert rest and all(c.metadata["slideshow"]["slide_type"] == "slide" for c in rest)


def test_the_title_slide_gives_the_length_the_reading_time_and_what_to_know(slides):
    nb, numbers = slides.plan(_written(_md("## 1. One", "First.")))
    title = nb.cells[0].source
    assert title.startswith("# 03 · Estimators") and f"about {numbers['minutes']:.0f} minutes" in title
    assert f"{numbers['slides']} slides" in title and "about 50 minutes" in title and "the ELBO." in title
    assert numbers["slides"] == 2  # the title slide and slide 1


def test_a_title_cell_without_those_lines_still_gives_a_title_slide(slides):
    nb = nbformat.v4.new_notebook(cells=[_md("# 05 · A title\n\nIntro.", "")])
    title = slides.slide_notebook(nb).cells[0].source
    assert title.startswith("# 05 · A title") and "**Lecture**: about" in title and "need to know" not in title


def test_the_numbers_follow_the_estimate_of_the_lecture_path_checker(slides):
    lp = load_script("tools/lecture_path.py")
    nb = _written(_md("## 1. One", "First."), _figure_cell(600, 300))
    numbers = slides.deck_numbers(nb)
    words = sum(lp.spoken_words(c.source) for c in nb.cells if c.cell_type == "markdown")
    assert numbers["figures_and_tables"] == 1 and numbers["notes_words"] == words
    assert numbers["minutes"] == pytest.approx(lp.minutes(words, 1, numbers["slides"]))


def test_the_index_lists_each_deck_with_its_length_slides_and_handout(slides, tmp_path):
    deck = tmp_path / "01_a.slides.html"
    (tmp_path / "01_a.pdf").write_bytes(b"%PDF-1.4")
    page = slides.write_index([(deck, "01 · A", {"minutes": 61.6, "slides": 40})], tmp_path).read_text()
    assert 'href="01_a.slides.html"' in page and "about 62 min" in page and "<td>40</td>" in page
    assert 'href="01_a.pdf"' in page


def test_without_chromium_the_handouts_are_skipped_with_one_line(slides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(slides, "find_chromium", lambda: None)
    assert slides.write_pdfs([tmp_path / "01_a.slides.html"], tmp_path) == []
    assert capsys.readouterr().out.strip().endswith("PDF handouts skipped")


def test_code_is_hidden_where_the_output_is_the_point_and_figures_are_sized(slides):
    nb = slides.slide_notebook(_notebook())
    figure = next(c for c in nb.cells if c.source.startswith("plt.plot"))
    assert "NBVAL" not in figure.source  # the test marker is not shown
    assert "remove-input" in figure.metadata.tags and figure.metadata["jupyter"]["source_hidden"]
    size = figure.outputs[0].metadata["image/png"]
    assert size["width"] / size["height"] == pytest.approx(2, rel=0.01) and size["width"] <= slides.FIGURE_MAX_W
    printing = next(c for c in nb.cells if c.source.startswith("print(1)"))
    assert "remove-input" in printing.metadata.tags  # code that only prints: the output is the point


def test_the_slide_copy_leaves_the_committed_notebook_alone_and_is_deterministic(slides):
    original = _notebook()
    before = nbformat.writes(original)
    first, second = slides.slide_notebook(original), slides.slide_notebook(original)
    assert nbformat.writes(original) == before
    assert nbformat.writes(first) == nbformat.writes(second)


def test_links_point_at_the_decks_and_remote_links_stay(slides, copies):
    md = "[a](02_vae_and_the_elbo.ipynb#sec) [b](../README.md) [c](https://example.org/x.ipynb) [d](#here)"
    out = copies.relink(md, slides._deck_link)
    assert out == "[a](02_vae_and_the_elbo.slides.html#sec) [b](index.html) [c](https://example.org/x.ipynb) [d](#here)"


def test_widget_outputs_become_a_note_or_their_text(copies):
    nb = copies.static_outputs(_notebook())
    explorer = next(c for c in nb.cells if c.source.startswith("explorer")).outputs[0].data
    bar = next(c for c in nb.cells if c.source.startswith("fit(")).outputs[0].data
    assert list(explorer) == ["text/html", "text/plain"] and "live kernel" in explorer["text/html"]
    assert bar == {"text/plain": "training: 100%|##| 9/9"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_of_the_series_has_a_deck(slides, path):
    nb = slides.slide_notebook(nbformat.read(path, as_version=4))
    shown = [c for c in nb.cells if c.metadata["slideshow"]["slide_type"] not in ("skip", "notes")]
    assert shown and shown[0].metadata["slideshow"]["slide_type"] == "slide"
    assert sum(c.metadata["slideshow"]["slide_type"] == "slide" for c in nb.cells) >= 3


def _remote_loads(html: str) -> list[str]:
    return [m.group(0)[:120] for m in LOADING_TAG.finditer(html) if re.match(r"(https?:)?//", m.group(3))]


def test_the_deck_loads_only_local_files(slides, tmp_path):
    path = tmp_path / "01_a_title.ipynb"
    nbformat.write(_notebook(), path)
    slides.copy_assets(tmp_path)
    html = slides.write_deck(path, tmp_path)[0].read_text()
    assert not _remote_loads(html), _remote_loads(html)
    for src in ("reveal.js/dist/reveal.js", "reveal.js/plugin/notes/notes.js", "mathjax/tex-chtml-full.js"):
        assert f'src="{src}"' in html and (tmp_path / src).is_file()
    assert (tmp_path / "reveal.js/dist/theme/white.css").is_file()
    assert "01_a_title.slides.html" not in html and 'href="02_next.slides.html"' in html
    assert 'navigationMode: "linear"' in html and "RevealNotes" in html  # every slide by arrow; speaker view


def test_the_book_loads_only_local_files(book, tmp_path):
    path = tmp_path / "src" / "01_a_title.ipynb"
    path.parent.mkdir()
    nbformat.write(_notebook(), path)
    index = book.build([path], tmp_path / "book")
    page = tmp_path / "book" / "notebooks" / "01_a_title.html"
    for html in (index.read_text(), page.read_text()):
        assert not _remote_loads(html), _remote_loads(html)
    text = page.read_text()
    assert "mathjax/tex-chtml-full.js" in text and (tmp_path / "book/_static/mathjax/tex-chtml-full.js").is_file()
    assert "<details" in text and "<details open" not in text
    assert "live kernel" in text and "interactive(children" not in text
    assert 'href="../index.html"' in text  # the notebook's ../README.md link, now the landing page


# ------------------------------------------------------------------ the book without the test rig
def _rigged_notebook():
    v4 = nbformat.v4
    intro = v4.new_markdown_cell(
        "Read on. **Cells marked `# NBVAL_IGNORE_OUTPUT`** print numbers that vary between computers. "
        "The cell after each checks, with `claims.expect`, that the text's numbers hold. Then the lesson."
    )
    sampled = v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\n# (random sampling)\nloss = train()\nprint(loss)")
    check = v4.new_code_cell("gap = loss - 200\nclaims.expect('the gap (nats)', gap, 43, tol=1)")
    kept = v4.new_code_cell("ratio = loss / 2\nclaims.expect_true('ratio positive', ratio > 0)")
    uses = v4.new_code_cell("print(ratio)")
    library = v4.new_code_cell("claims.expect('mine', mine, 1.0, tol=0.1)\nassert np.isclose(mine, library)")
    solution = v4.new_code_cell("answer = 3\nclaims.expect('the answer', answer, 3, tol=0)")
    solution.metadata["jupyter"] = {"source_hidden": True}
    return v4.new_notebook(cells=[intro, sampled, check, kept, uses, library, solution])


def _removed(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if "remove-cell" in c.metadata.get("tags", [])]


def test_the_book_copy_drops_the_nbval_markers_and_their_comment(copies):
    nb = copies.for_readers(_rigged_notebook())
    assert nb.cells[1].source == "loss = train()\nprint(loss)"


def test_the_book_copy_removes_a_cell_that_only_checks_the_prose(copies):
    assert 2 in _removed(copies.for_readers(_rigged_notebook()))


def test_a_check_cell_stays_when_a_later_cell_reads_what_it_computes(copies):
    assert 3 not in _removed(copies.for_readers(_rigged_notebook()))


def test_a_formula_checked_against_the_library_and_a_worked_solution_stay(copies):
    removed = _removed(copies.for_readers(_rigged_notebook()))
    assert 5 not in removed and 6 not in removed


def test_the_book_copy_drops_the_sentence_about_the_markers_and_keeps_the_rest(copies):
    intro = copies.for_readers(_rigged_notebook()).cells[0].source
    assert intro == "Read on. Then the lesson."


def test_no_page_of_the_book_keeps_an_nbval_marker(book, tmp_path):
    src = book.stage(NOTEBOOKS, tmp_path / "src")
    for page in sorted((src / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(page, as_version=4)
        assert not [c for c in nb.cells if "NBVAL" in c.source], page.name


# ------------------------------------------------------------------ the book for learners
def _series_notebook(title: str, minutes: int | None = None):
    first = f"# {title}\n\nWhat it is about.\n"
    if minutes is not None:
        first += f"\n**Reading time**: about {minutes} minutes (exercises not included)\n"
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(first)])


def test_the_landing_page_lists_the_notebooks_in_order_with_the_reading_times_they_state(book):
    notebooks = [
        ("notebooks/01_a", _series_notebook("01 · A", 30)),
        ("notebooks/02b_b", _series_notebook("02b · B", 45)),
    ]
    page = book.landing_page(notebooks, "https://github.com/someone/series")
    assert "| [01 · A](notebooks/01_a.ipynb) | about 30 min |" in page
    assert "| [02b · B](notebooks/02b_b.ipynb) | about 45 min |" in page
    assert "All 2 together: about 1 h 15 min." in page
    assert "(https://mybinder.org/v2/gh/someone/series/HEAD?urlpath=lab/tree/notebooks/01_a.ipynb)" in page
    assert "(https://github.com/someone/series)" in page
    assert "notebooks/01_a\nnotebooks/02b_b\nreferences\n```" in page  # the sidebar: the notebooks, then References
    assert "## What you will learn" in page and "{{" not in page


def test_a_notebook_that_states_no_reading_time_gets_an_empty_cell_and_no_total(book):
    notebooks = [("notebooks/01_a", _series_notebook("01 · A", 30)), ("notebooks/02_b", _series_notebook("02 · B"))]
    page = book.landing_page(notebooks, "https://github.com/someone/series")
    assert "| [02 · B](notebooks/02_b.ipynb) |  |" in page and "together" not in page
    assert book.reading_minutes(_series_notebook("x")) is None


def test_readme_badge_and_the_book_use_the_one_repository_address(book):
    """pyproject.toml's [project.urls] Repository is the one place; README and book/conf.py must agree with it."""
    repository = book.repository_url()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository), repository
    conf = load_script("book/conf.py")
    assert conf.REPOSITORY == repository == conf.html_theme_options["repository_url"]
    assert conf.html_theme_options["launch_buttons"]["binderhub_url"] == book.BINDERHUB
    badges = re.findall(r"\]\((https://mybinder\.org/v2/[^)\s]+)\)", (REPO / "README.md").read_text())
    assert badges, "README.md has no Binder link"
    for url in badges:
        assert url == book.binder_url(repository, url.split("urlpath=lab/tree/")[-1]), (url, repository)


def test_citations_are_found_as_the_notebooks_write_them(book):
    text = (
        "Burda et al. (2016) and (Kingma and Welling, 2019) and (Xiao, Rasul and Vollgraf, 2017); Roeder, Wu &"
        " Duvenaud 2017, (This is REINFORCE, Williams 1992.) Kool et\n  al. 2019; (Bowman et al. 2016; Sønderby et al."
        " 2016), Loaiza-Ganem and Cunningham (2019). In 2019 a note (Spring 2023), JMLR 2020, seed 2024, Table 1"
    )
    assert book.citations(text) == [
        "Burda 2016", "Kingma 2019", "Xiao 2017", "Roeder 2017", "Williams 1992", "Kool 2019", "Bowman 2016",
        "Sønderby 2016", "Loaiza-Ganem 2019",
    ]  # fmt: skip


def test_every_paper_the_notebooks_cite_is_in_the_bibliography(book):
    notebooks = [(f"notebooks/{p.stem}", nbformat.read(p, as_version=4)) for p in NOTEBOOKS]
    cited = book.cited_by(notebooks)
    missing = {key: pages for key, pages in cited.items() if key not in book.bibliography()}
    assert not missing, f"cited in the notebooks but not in book/references.toml (add them): {missing}"
    page = book.references_page(notebooks)
    assert page.count("\n- ") == len(cited) > 10 and "Importance Weighted Autoencoders" in page


def _exercise_notebook():
    v4 = nbformat.v4
    figure = v4.new_code_cell("plt.plot(x)")
    figure.outputs = [v4.new_output("display_data", data={"image/png": png(4, 2), "text/plain": "<Figure>"})]
    hidden = {"jupyter": {"source_hidden": True}}
    cells = [
        v4.new_markdown_cell("# 01 · T"),
        figure,
        v4.new_code_cell("# Reference answers used by the check cells\n_ref = 1", metadata=hidden),
        v4.new_markdown_cell("## Exercises\n\n### Exercise 1: a question"),
        v4.new_markdown_cell("**Solution** (collapsed)"),
        v4.new_code_cell("answer = 42", metadata={"jupyter": {"source_hidden": True}}),
        v4.new_markdown_cell(
            "**Solution** (collapsed; the derivation first)\n\n<details><summary>Worked solution"
            "</summary>\n\nA.\n</details>"
        ),  # fmt: skip
        v4.new_markdown_cell(
            "### Solutions\n\n<details><summary>Exercise 2</summary>\n\nB.\n</details>\n\n"
            "<details><summary>What the figure shows (open after)</summary>\n\nC.\n</details>"
        ),  # fmt: skip
    ]
    return v4.new_notebook(cells=cells)


def test_the_book_folds_figure_code_and_labels_every_solution_one_way(book):
    nb = book.for_book(_exercise_notebook())
    figure, answers, _, empty, solution, worked, grouped = nb.cells[1:]
    assert "hide-input" in figure.metadata.tags and figure.metadata.mystnb == book.FIGURE_PROMPT
    assert "hide-input" in answers.metadata.tags and answers.metadata.mystnb == book.ANSWERS_PROMPT
    assert "remove-cell" in empty.metadata.tags  # "**Solution** (collapsed)" alone: the toggle says it
    assert "hide-input" in solution.metadata.tags and solution.metadata.mystnb == book.SOLUTION_PROMPT
    assert worked.source == "<details><summary>Solution</summary>\n\nA.\n</details>"
    assert "<summary>Solution to exercise 2</summary>" in grouped.source
    assert "<summary>Solution</summary>\n\nC." in grouped.source


def test_every_page_of_the_book_folds_its_figure_code_and_says_solution(book, tmp_path):
    src = book.stage(NOTEBOOKS, tmp_path / "src")
    for page in sorted((src / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(page, as_version=4)
        markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        for old in ("<summary>Worked solution", "<summary>Exercise", "**Solution** (collapsed"):
            assert old not in markdown, f"{page.name}: {old!r}"
        for cell in nb.cells:
            outputs = cell.get("outputs", [])
            if any("image/png" in o.get("data", {}) for o in outputs) and "remove-cell" not in cell.metadata.get(
                "tags", []
            ):
                assert "hide-input" in cell.metadata.tags, f"{page.name}: figure code shown: {cell.source[:60]!r}"
    assert "```{toctree}" in (src / "index.md").read_text() and (src / "references.md").is_file()


def test_a_missing_notebook_or_one_named_otherwise_is_refused_saying_which(copies, tmp_path):
    with pytest.raises(SystemExit, match="no such notebook: .*nope.ipynb"):
        copies.series([tmp_path / "nope.ipynb"])
    (tmp_path / "notes.ipynb").write_text("{}")
    with pytest.raises(SystemExit, match=r"named NN_name.ipynb or NNb_name.ipynb\): .*notes.ipynb"):
        copies.series([tmp_path / "notes.ipynb"])
    assert copies.series([NOTEBOOKS[1], NOTEBOOKS[0]]) == NOTEBOOKS[:2]


def test_a_notebook_with_no_lecture_path_is_refused_naming_it(slides):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A title")])
    with pytest.raises(SystemExit, match="notebooks/99_x.ipynb: no cell is tagged 'lecture'"):
        slides.plan(nb, name="notebooks/99_x.ipynb")


def test_words_of_a_label_stay_in_one_column_and_numbers_one_blank_apart_split(slides):
    rows = [("row", "speed", "gain"), ("pathwise", "1,459", "1.13x")]
    rows += [("score, posterior-mean baseline", "19,059", "13.06x"), ("score, batch", "21,527", "1.02x")]
    text = "".join(f"{a:<32}{b:>6} {c:>6}\n" for a, b, c in rows)  # "19,059 13.06x": one blank apart
    [(html_text, _)] = slides.printed_tables(text)
    assert _cells(html_text) == [list(r) for r in rows]


def test_a_line_of_text_over_a_table_is_not_taken_for_its_header(slides):
    text = (
        "-L_5000: 227.52   -ELBO, encoder: 230.84   -ELBO, per image: 228.22   (nats)\n"
        "gap (nats)        mean   standard error\n"
        "total             3.32   0.10\n"
        "approximation     0.70   0.03\n"
    )
    [(html_text, _)] = slides.printed_tables(text)
    assert _cells(html_text)[0] == ["gap (nats)", "mean", "standard error"]
    assert html_text.startswith('<pre class="printed-text">-L_5000: 227.52')


def test_book_and_slides_take_a_notebooks_title_from_its_first_level_one_heading_in_any_markdown_cell(book):
    cells = [nbformat.v4.new_code_cell("# a comment, not a title"), nbformat.v4.new_markdown_cell("# 03 · C\n# later")]
    nb = nbformat.v4.new_notebook(cells=cells)
    page = book.landing_page([("notebooks/03_c", nb)], "https://github.com/someone/series")
    assert "| [03 · C](notebooks/03_c.ipynb) |" in page
    untitled = book.landing_page([("notebooks/04_d", nbformat.v4.new_notebook())], "https://github.com/someone/series")
    assert "| [notebooks/04_d](notebooks/04_d.ipynb) |" in untitled  # no heading: the page's name
