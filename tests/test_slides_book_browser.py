"""The slide decks and the book, opened in a real browser with the network blocked.

`make slides` and `make book` promise pages that work offline: every script, style sheet, font
and figure is a local file, equations are rendered by a local MathJax, and figures fit the
1280x720 slide. This test opens what `make slides` and `make book` built in build/slides and
build/book when each is complete (the decks with their slide copies and PDF handouts; the book's
pages) and newer than everything it is built from (the notebooks, the build tools and the modules
they import, vae_lib.notebook.plotting, the slide template, the book's configuration, README.md,
the pins: tests/helpers.py, SITE_INPUTS); otherwise (or with VAE_SITE_REBUILD=1) it builds the
stale part into a temporary folder with the same tools (tools/build_slides.py and
tools/build_book.py over every notebook). VAE_SITE_DIR names a site built elsewhere, taken as it
is (a warning says where it is stale). It serves them from a local HTTP server on 127.0.0.1, and
opens them in Debian's Chromium (headless, through Selenium and the system chromedriver; nothing is
downloaded) with every host but 127.0.0.1 unresolvable and a dead proxy for everything else. It
checks what a reader sees:

- no request leaves the machine (the browser's own network log) and none fails (the server's);
- MathJax rendered (`mjx-container` elements, no `$...$` or `\\(` left in the text);
- every figure loaded (`naturalWidth > 0`);
- no slide of any deck is taller than the 720 px slide;
- the book's index links every notebook page, and its collapsed solutions stay collapsed;

and, per deck, what a lecturer and the back row get (issue #26):

- every slide is reached by pressing the right arrow from the first (and by space), in order;
- type: tables at 20 px or more, code and printed output at 18 px or more, and figures whose
  smallest type, shown at the size the slide gives them, is 14 pt (18.7 px, build_slides'
  MIN_FIGURE_TYPE_PX) or more (the figure's type in points is read from the code that drew it,
  build_slides' `type_points`: vae_lib.notebook.plotting's 14 pt where the notebook imports it,
  else matplotlib's 10, or a smaller `fontsize=` in the cell; the scale that type needs from
  build_slides' `_readable_scale`; natural against rendered size from the browser). The decks in
  FIGURES_NOT_YET_REDRAWN are expected to fail the figure check (strict xfail: once one passes,
  the test fails until it is taken off the list);
- the words of visible text per slide (no math, code or printed output): median 45 or less,
  none over lecture_path's MAX_SLIDE_WORDS (90); speaker notes on most slides (whether each
  promise has its output on the path is tests/test_lecture_path.py's check);
- the speaker view (`S`) opens offline with the notes; the index links a PDF handout per deck
  with a page per slide.

Screenshots at 1280x720 land in build/screenshots/ (ignored by git): every slide of every deck
(build/screenshots/slides/NN_name/NNN.png, steps shown), the title slide, a slide with an
equation, a slide with a figure, the speaker view, the book's index, a notebook page, its math
and its exercises.

Skips (with the reason) only where no Chromium/chromedriver is installed
(`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import nbformat
import pytest
from helpers import (
    NOTEBOOKS,
    REPO,
    SCREENSHOTS,
    SITE_INPUTS,
    SITE_PARTS,
    Browser,
    built_part_is_current,
    local_imports,
    newest_input,
    shown,
    site_pages,
    tool,
    wait_for,
)

pytestmark = pytest.mark.slow  # a minute: `make unit` leaves it out

DECK = "02_vae_and_the_elbo"  # the most equations and figures
WIDGET_NOTEBOOKS = [p for p in NOTEBOOKS if '"interactive(children' in p.read_text()]
WIDTH, HEIGHT = 1280, 720
DECKS = [p.stem for p in NOTEBOOKS]

# The figure-type threshold (14 pt as shown) holds for every deck but these, whose figure test is
# an expected failure (strict: it fails once the deck passes, until the deck is taken off this list):
# 02's samples slide shows two figures at 16 px.
FIGURES_NOT_YET_REDRAWN: list[str] = []
MAX_MEDIAN_WORDS = 45  # words of visible text per slide; at most lecture_path.MAX_SLIDE_WORDS on any
MIN_NOTES_SHARE = 0.5  # "speaker notes on most slides"
MIN_TABLE_PX, MIN_CODE_PX = 20.0, 18.0

# Text a reader sees, without code, printed output or rendered math: where raw TeX would show.
VISIBLE_TEXT_JS = """
const root = document.querySelector(arguments[0]);
if (!root) return null;
const copy = root.cloneNode(true);
const hidden = 'pre, code, script, style, mjx-container, mjx-assistive-mml, .highlight';
copy.querySelectorAll(hidden + ', aside.notes').forEach(e => e.remove());
return copy.textContent;
"""
RAW_TEX = re.compile(r"\$[^$\n]{1,200}\$|\\\(|\\\[|\\begin\{")

# Every slide of the deck, visited in order. The deck scales a slide down when it is still taller
# than the 720 px slide (data-fit, tools/slides_template/): its natural height and that factor.
SLIDE_HEIGHTS_JS = """
const out = [];
const room = Reveal.getConfig().height;
Reveal.getHorizontalSlides().forEach((h, i) => {
  const n = h.querySelectorAll(':scope > section').length || 1;
  for (let j = 0; j < n; j++) {
    Reveal.slide(i, j);
    const s = Reveal.getCurrentSlide();
    const box = s.querySelector(':scope > .deck-fit');
    const fit = parseFloat(s.dataset.fit);
    const natural = box ? (fit < 1 ? room / fit : box.scrollHeight) : s.scrollHeight;
    const shown = box ? box.getBoundingClientRect().height / Reveal.getScale() : s.scrollHeight;
    const text = (s.querySelector('h1, h2, h3, p, li') || s).textContent.trim().slice(0, 70);
    out.push({slide: `${i}.${j}`, natural: Math.round(natural), shown: Math.round(shown), fit: fit, text: text});
  }
});
Reveal.slide(0, 0);
return out;
"""
MIN_FIT = 0.7  # a slide scaled down further than this is too small to read: cut it in the build


def test_site_inputs_name_every_module_and_file_the_builders_read():
    """SITE_INPUTS, which decides whether build/ is stale, lists each builder, the modules of tools/
    it imports (and they import), and the files and folders it reads by name."""
    slides, book = tool("build_slides"), tool("build_book")
    read = {
        "slides": local_imports(REPO / "tools" / "build_slides.py")
        | {shown(slides.PLOTTING), shown(slides.TEMPLATE_DIR)},
        "book": local_imports(REPO / "tools" / "build_book.py") | {"tools/build_book.py", shown(book.CONF_DIR)},
    }
    for part in SITE_PARTS:
        missing = sorted(read[part] - set(SITE_INPUTS[part]))
        assert not missing, f"the {part} are built from {missing}, which SITE_INPUTS[{part!r}] does not list"


@pytest.mark.parametrize("part", SITE_PARTS)
def test_a_built_part_counts_as_stale_when_a_page_is_missing_or_older_than_an_input(tmp_path, part):
    """The freshness check the site fixtures rely on: a missing page (a PDF handout too), then an
    older page, is stale."""
    assert built_part_is_current(tmp_path, part)[0] is False
    pages = site_pages(tmp_path, part)
    for page in pages:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("x")
    newest = newest_input(part)[0]
    for page in pages:
        os.utime(page, (newest + 10, newest + 10))
    assert built_part_is_current(tmp_path, part) == (True, "every page is newer than everything it is built from")
    os.utime(pages[0], (newest - 10, newest - 10))
    current, why = built_part_is_current(tmp_path, part)
    assert current is False and "is newer than" in why
    os.utime(pages[0], (newest + 10, newest + 10))
    gone = next(p for p in pages if p.suffix == ".pdf") if part == "slides" else pages[-1]
    gone.unlink()
    why = f"{shown(gone)} is missing" + (" (a build made with --no-pdf has no handouts)" if part == "slides" else "")
    assert built_part_is_current(tmp_path, part) == (False, why)


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    b = Browser(site, tmp_path_factory.mktemp("browser"), (WIDTH, HEIGHT), "slides and book browser test")
    yield b
    b.close()


def _assert_offline(browser: Browser) -> None:
    assert not browser.off_machine(), f"requests that left the machine: {browser.off_machine()}"
    assert not browser.failed(), f"local files that failed to load (status, path): {browser.failed()}"


def _assert_math_rendered(browser: Browser, scope: str, at_least: int) -> None:
    n = browser.js("return document.querySelectorAll('mjx-container').length")
    assert n >= at_least, f"only {n} rendered equations (mjx-container) in {scope}"
    raw = RAW_TEX.findall(browser.js(VISIBLE_TEXT_JS, scope) or "")
    assert not raw, f"TeX left unrendered in {scope}: {raw[:5]}"


def _assert_images_loaded(browser: Browser, at_least: int) -> None:
    images = browser.images()
    broken = [i for i in images if not (i["complete"] and i["width"] > 0)]
    assert len(images) >= at_least and not broken, f"{len(images)} images, not loaded: {broken}"


def test_deck_renders_offline_with_math_and_figures(browser):
    browser.open(f"slides/{DECK}.slides.html")
    _assert_offline(browser)
    _assert_math_rendered(browser, ".reveal .slides", at_least=20)
    _assert_images_loaded(browser, at_least=5)
    loading_tags = browser.js(
        "return [...document.querySelectorAll('script[src], link[href], img[src]')]"
        ".map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => /^(https?:)?\\/\\//.test(u))"
    )
    assert not loading_tags, f"tags that load from the network: {loading_tags}"

    browser.js("Reveal.slide(0, 0)")
    browser.screenshot(f"slides_{DECK}_title")
    for what, selector in (("equation", "mjx-container[display='true']"), ("figure", ".jp-OutputArea-output img")):
        where = browser.js(
            "const el = document.querySelector(arguments[0]);"
            "const s = el.closest('section'); const idx = Reveal.getIndices(s); Reveal.slide(idx.h, idx.v || 0);"
            "return idx;",
            selector,
        )
        assert where is not None, f"no slide with a {what}"
        time.sleep(0.3)
        browser.screenshot(f"slides_{DECK}_{what}")


def test_no_slide_of_any_deck_overflows(browser):
    too_tall, scaled = {}, {}
    for nb in NOTEBOOKS:
        browser.open(f"slides/{nb.stem}.slides.html")
        slides = browser.js(SLIDE_HEIGHTS_JS)
        assert len(slides) > 5, f"{nb.stem}: only {len(slides)} slides"
        bad = [s for s in slides if not (s["fit"] >= MIN_FIT and s["shown"] <= HEIGHT + 1)]
        if bad:
            too_tall[nb.stem] = bad
        if any(s["fit"] < 1 for s in slides):
            scaled[nb.stem] = [(s["slide"], s["fit"]) for s in slides if s["fit"] < 1]
    _assert_offline(browser)
    print(f"slides the deck scaled down to fit (slide, factor): {scaled or 'none'}")
    assert not too_tall, f"slides that do not fit {HEIGHT} px: {json.dumps(too_tall, indent=1)}"


def test_book_index_and_a_notebook_page_render_offline(browser):
    browser.open("book/index.html")
    _assert_offline(browser)
    title = browser.js("return document.querySelector('article h1').textContent")
    assert "Variational autoencoders" in title
    links = browser.js(
        "return [...document.querySelectorAll('nav a.reference.internal')].map(a => a.getAttribute('href'))"
    )
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}.html" in links, f"the book's navigation has no link to {nb.stem}: {links}"
    table_links = browser.js(
        "return [...document.querySelectorAll('article table a')].map(a => a.getAttribute('href'))"
    )
    assert f"notebooks/{NOTEBOOKS[0].stem}.html" in table_links, f"README's table does not link pages: {table_links}"
    _assert_images_loaded(browser, at_least=0)
    browser.screenshot("book_index")

    browser.open(f"book/notebooks/{DECK}.html")
    _assert_offline(browser)
    _assert_math_rendered(browser, "article", at_least=100)
    _assert_images_loaded(browser, at_least=5)
    details = browser.js("return [...document.querySelectorAll('article details')].map(d => d.open)")
    nb = nbformat.read(REPO / "notebooks" / f"{DECK}.ipynb", as_version=4)
    collapsed = sum(c.source.count("<details") for c in nb.cells if c.cell_type == "markdown") + sum(
        bool(c.metadata.get("jupyter", {}).get("source_hidden")) for c in nb.cells
    )
    assert len(details) >= collapsed > 0, f"{len(details)} collapsed blocks on the page, {collapsed} in the notebook"
    assert not any(details), f"the worked solutions should be collapsed: {details}"
    browser.screenshot(f"book_{DECK}")
    browser.js("document.querySelector(\"mjx-container[display='true']\").scrollIntoView({block: 'center'})")
    browser.screenshot(f"book_{DECK}_math")
    browser.js("document.querySelector('article details').scrollIntoView({block: 'center'})")
    browser.screenshot(f"book_{DECK}_exercises")


@pytest.mark.parametrize("nb", WIDGET_NOTEBOOKS, ids=lambda p: p.stem)
def test_book_shows_a_note_not_junk_for_a_widget(browser, nb):
    browser.open(f"book/notebooks/{nb.stem}.html")
    _assert_offline(browser)
    text = browser.js("return document.querySelector('article').innerText")
    assert "interactive(children" not in text and "widget-view" not in text
    note = browser.js("const n = document.querySelector('article .widget-note'); return n && n.innerText")
    assert note and "live kernel" in note
    browser.js("document.querySelector('article .widget-note').scrollIntoView({block: 'center'})")
    browser.screenshot(f"book_{nb.stem}_widget")


def test_jupyterlab_rise_presents_the_slide_copy(built_slides, browser, tmp_path):
    """`make lab LAB_DIR=build/slides`: jupyterlab-rise shows the copy as reveal.js slides."""
    from test_jupyterlab_browser import _LabServer

    server = _LabServer(tmp_path, built_slides)
    try:
        server.wait_ready()
        browser.driver.get(f"{server.url}/rise/{DECK}.ipynb?token={server.token}")
        state_js = (
            "return {ready: !!document.querySelector('.reveal.ready'),"
            " slides: document.querySelectorAll('.reveal .slides section').length,"
            " math: document.querySelectorAll('mjx-container').length}"
        )
        state = wait_for(
            lambda: (lambda st: st if st["ready"] and st["slides"] else None)(browser.js(state_js)), 90, "RISE"
        )
        assert state["slides"] > 10 and state["math"] > 0, state
        time.sleep(1)
        browser.screenshot(f"rise_{DECK}")
        assert not browser.off_machine(), f"requests that left the machine: {browser.off_machine()}"
    finally:
        server.stop()


# ------------------------------------------------------------------ each deck as a lecture (#26)
# One slide, shown with all its steps: its visible words (no code, printed output, math, tables or
# notes), whether it has speaker notes, the smallest type of its tables and of its code and printed
# output (computed size times the deck's fit factor), and each figure's natural and shown width.
SLIDE_REPORT_JS = """
const s = Reveal.getSlides()[arguments[0]];
const idx = Reveal.getIndices(s);
const steps = s.querySelectorAll('.fragment').length;
Reveal.slide(idx.h, idx.v || 0, steps ? steps - 1 : undefined);
const fit = parseFloat(s.dataset.fit) || 1;
const copy = s.cloneNode(true);
copy.querySelectorAll('aside.notes, pre, script, style, mjx-container, mjx-assistive-mml, table, .widget-note')
  .forEach(e => e.remove());
const words = copy.textContent.split(/\\s+/).filter(w => /[\\p{L}\\p{N}]/u.test(w)).length;
const notes = [...s.querySelectorAll('aside.notes')].map(a => a.textContent.trim()).join(' ');
const px = sel => [...s.querySelectorAll(sel)].filter(e => !e.closest('aside.notes'))
  .map(e => parseFloat(getComputedStyle(e).fontSize) * fit);
const least = a => a.length ? Math.min(...a) : null;
const figures = [...s.querySelectorAll('.jp-OutputArea-output img')]
  .map(i => ({natural: i.naturalWidth, shown: i.getBoundingClientRect().width / Reveal.getScale()}));
const heading = s.querySelector('h1, h2, h3');
return {slide: `${idx.h}.${idx.v || 0}`, words: words, notes: notes.length, steps: steps, fit: fit,
        table_px: least(px('td, th')), code_px: least(px('pre')), figures: figures,
        text: (heading || s).textContent.trim().slice(0, 60)};
"""

# Record every slide the deck shows, from the first with no step shown, as keys are pressed.
NAVIGATION_JS = """
window.__visited = [];
const key = () => { const i = Reveal.getIndices(); return `${i.h}.${i.v || 0}`; };
Reveal.slide(0, 0, -1);
window.__visited.push(key());
if (!window.__recording) {
  Reveal.on('slidechanged', () => window.__visited.push(key()));
  window.__recording = true;
}
return {all: Reveal.getSlides().map(s => { const i = Reveal.getIndices(s); return `${i.h}.${i.v || 0}`; }),
        steps: document.querySelectorAll('.reveal .slides .fragment').length};
"""

_REPORTS: dict[str, list[dict]] = {}


def _deck_report(browser: Browser, stem: str) -> list[dict]:
    """Every slide of a deck measured (SLIDE_REPORT_JS) and photographed, once per test session."""
    if stem not in _REPORTS:
        browser.open(f"slides/{stem}.slides.html")
        folder = SCREENSHOTS / "slides" / stem
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        report = []
        for k in range(browser.js("return Reveal.getSlides().length")):
            report.append(browser.js(SLIDE_REPORT_JS, k))
            browser.driver.save_screenshot(str(folder / f"{k:03d}.png"))
        _REPORTS[stem] = report
        browser.js("Reveal.slide(0, 0)")
    return _REPORTS[stem]


def _press(browser: Browser, key: str, times: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    browser.js("if (document.activeElement) { document.activeElement.blur(); } window.focus();")  # keys to the deck
    for start in range(0, times, 50):
        ActionChains(browser.driver).send_keys(key * min(50, times - start)).perform()


@pytest.mark.parametrize("stem", DECKS)
def test_every_slide_is_reached_by_the_right_arrow_and_by_space(browser, stem):
    from selenium.webdriver.common.keys import Keys

    browser.open(f"slides/{stem}.slides.html")
    for key, name in ((Keys.ARROW_RIGHT, "right arrow"), (Keys.SPACE, "space")):
        deck = browser.js(NAVIGATION_JS)
        browser.js("Reveal.slide(0, 0, -1)")
        _press(browser, key, len(deck["all"]) + deck["steps"] + 3)
        visited = browser.js("return window.__visited")
        seen = [s for k, s in enumerate(visited) if k == 0 or s != visited[k - 1]]
        assert seen == deck["all"], (
            f"{stem}: pressing the {name} from the first slide showed {len(seen)} of {len(deck['all'])} slides; "
            f"missed {sorted(set(deck['all']) - set(seen))[:10]}"
        )


def _figure_type_px(slides: Path, stem: str, report: list[dict]) -> list[tuple[str, float]]:
    """(slide, smallest type in px as shown) of each figure of the deck, read from the slide copy
    the deck was built from (build/slides/NN_name.ipynb: the notebook's cells, code and outputs).
    The builder's own estimate: `type_points` gives the points the code that drew a cell's figures
    asks for (14 pt after the notebook imported vae_lib.notebook.plotting, else matplotlib's 10,
    less where a `fontsize=` says so), `_readable_scale` the scale at which that type is
    MIN_FIGURE_TYPE_PX given the PNGs' dots per inch; the browser gives the scale shown. Only true
    of outputs stored after that code ran: re-execute a notebook after changing its figures."""
    builder = tool("build_slides")
    nb = nbformat.read(slides / f"{stem}.ipynb", as_version=4)
    points = builder.type_points(nb)
    needed = [  # per figure on the path, in order: the scale at which its type is 14 pt
        builder._readable_scale(cell, points[k])
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and builder.is_lecture(cell)
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    figures = [(s["slide"], f) for s in report for f in s["figures"]]
    assert len(figures) == len(needed), f"{stem}: {len(figures)} figures on the slides, {len(needed)} on the path"
    return [
        (slide, builder.MIN_FIGURE_TYPE_PX * f["shown"] / f["natural"] / scale)
        for (slide, f), scale in zip(figures, needed, strict=True)
    ]


@pytest.mark.parametrize("stem", DECKS)
def test_tables_and_code_are_large_enough_to_read(browser, stem):
    report = _deck_report(browser, stem)
    tables = [(s["slide"], round(s["table_px"], 1)) for s in report if s["table_px"] and s["table_px"] < MIN_TABLE_PX]
    code = [(s["slide"], round(s["code_px"], 1)) for s in report if s["code_px"] and s["code_px"] < MIN_CODE_PX]
    assert not tables, f"{stem}: tables under {MIN_TABLE_PX} px (slide, px): {tables}"
    assert not code, f"{stem}: code or printed output under {MIN_CODE_PX} px (slide, px): {code}"


FIGURE_DECKS = [
    pytest.param(
        stem,
        marks=pytest.mark.xfail(
            strict=True, reason=f"{stem} is in FIGURES_NOT_YET_REDRAWN: take it off once its figures pass"
        ),
    )
    if stem in FIGURES_NOT_YET_REDRAWN
    else stem
    for stem in DECKS
]


@pytest.mark.parametrize("stem", FIGURE_DECKS)
def test_figures_type_is_large_enough_to_read(built_slides, browser, stem):
    report = _deck_report(browser, stem)
    figures = _figure_type_px(built_slides, stem, report)
    least = tool("build_slides").MIN_FIGURE_TYPE_PX
    small = [(slide, round(px, 1)) for slide, px in figures if px < least]
    print(f"{stem}: smallest figure type {min((px for _, px in figures), default=0):.1f} px")
    assert not small, f"{stem}: figures whose smallest type is under {least:.1f} px on the slide (slide, px): {small}"


@pytest.mark.parametrize("stem", DECKS)
def test_each_slide_is_short_and_has_notes(browser, stem):
    most_words = tool("lecture_path").MAX_SLIDE_WORDS
    report = _deck_report(browser, stem)
    words = [s["words"] for s in report]
    median, most = statistics.median(words), max(words)
    notes = sum(s["notes"] > 0 for s in report) / len(report)
    long = [(s["slide"], s["words"], s["text"]) for s in report if s["words"] > most_words]
    measured = (
        f"{stem}: {len(report)} slides, {sum(s['steps'] for s in report)} steps, words per slide median "
        f"{median:g} and max {most}, speaker notes on {notes:.0%} of the slides"
    )
    print(measured)
    assert median <= MAX_MEDIAN_WORDS, f"{measured}: median over {MAX_MEDIAN_WORDS}"
    assert not long, f"{stem}: slides over {most_words} words (slide, words, start): {long}"
    assert notes >= MIN_NOTES_SHARE, f"{measured}: notes on fewer than {MIN_NOTES_SHARE:.0%}"


def test_the_speaker_view_opens_offline_with_the_notes(browser):
    """`S` opens reveal.js's speaker view (the notes plugin, from the local copy): a window titled
    "reveal.js - Speaker View" whose frames load the deck from this machine, with the slide's notes.
    (Selenium cannot script that window: its frames keep loading, so it never reports loaded; the
    browser's list of pages and the server's log show it instead.)"""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.open(f"slides/{DECK}.slides.html")
    browser.js("Reveal.slide(2, 0)")
    notes = browser.js("return Reveal.getSlideNotes() || ''")
    assert len(re.sub(r"<[^>]+>", " ", notes).split()) > 5, f"slide 2 of {DECK} has no speaker notes: {notes[:200]}"
    browser.js("if (document.activeElement) { document.activeElement.blur(); } window.focus();")
    ActionChains(browser.driver).send_keys("s").perform()

    def speaker_view():
        pages = browser.driver.execute_cdp_cmd("Target.getTargets", {})["targetInfos"]
        receivers = [path for _, path in browser.served if f"{DECK}.slides.html?receiver" in path]
        return any(p["title"] == "reveal.js - Speaker View" for p in pages) and len(receivers) >= 2

    wait_for(speaker_view, 30, "the speaker view and its two frames of the deck")
    _assert_offline(browser)
    for page in browser.driver.execute_cdp_cmd("Target.getTargets", {})["targetInfos"]:
        if page["title"] == "reveal.js - Speaker View":
            browser.driver.execute_cdp_cmd("Target.closeTarget", {"targetId": page["targetId"]})


def test_the_index_links_a_pdf_handout_of_each_deck_with_a_page_per_slide(built_slides, browser):
    browser.open("slides/index.html")
    links = browser.js("return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    for stem in DECKS:
        assert f"{stem}.slides.html" in links and f"{stem}.pdf" in links, f"the index lacks {stem}'s deck or PDF"
        pdf = built_slides / f"{stem}.pdf"
        assert pdf.is_file(), f"{shown(pdf)}: no PDF handout (Chromium printed none)"
        pages, slides = tool("build_slides").pdf_pages(pdf), len(_deck_report(browser, stem))
        assert pdf.read_bytes().startswith(b"%PDF"), f"{shown(pdf)} is no PDF"
        assert pages == slides, f"{stem}.pdf has {pages} pages for {slides} slides"
