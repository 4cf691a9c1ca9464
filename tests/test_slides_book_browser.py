"""The slide decks and the book, opened in a real browser with the network blocked.

`make slides` and `make book` promise pages that work offline: every script, style sheet, font
and figure is a local file, equations are rendered by a local MathJax, and figures fit the
1280x720 slide. This test opens what `make slides` and `make book` built in build/slides and
build/book when both are there and newer than everything they are built from (the notebooks, the
build tools, the book's configuration, README.md, the pins); otherwise (or with
VAE_SITE_REBUILD=1) it builds both into a temporary folder with the same tools
(tools/build_slides.py and tools/build_book.py over every notebook). It serves
them from a local HTTP server on 127.0.0.1, and opens them in Debian's Chromium (headless,
through Selenium and the system chromedriver; nothing is downloaded) with every host but
127.0.0.1 unresolvable and a dead proxy for everything else. It checks what a reader sees:

- no request leaves the machine (the browser's own network log) and none fails (the server's);
- MathJax rendered (`mjx-container` elements, no `$...$` or `\\(` left in the text);
- every figure loaded (`naturalWidth > 0`);
- no slide of any deck is taller than the 720 px slide;
- the book's index links every notebook page, and its collapsed solutions stay collapsed;

and, per deck, what a lecturer and the back row get (issue #26):

- every slide is reached by pressing the right arrow from the first (and by space), in order;
- type: tables at 20 px or more, code and printed output at 18 px or more, and figures whose
  smallest type, shown at the size the slide gives them, is 14 pt (18.7 px) or more (the
  figure's type in points is read from the code that drew it: vae_lib.notebook.plotting's 14 pt
  where the notebook imports it, else matplotlib's 10, or a smaller `fontsize=` in the cell;
  the dots per inch from the PNG; natural against rendered size from the browser);
- the words of visible text per slide (no math, code or printed output): median 45 or less,
  none over 90; speaker notes on most slides; no promise without its output on the path
  (tools/lecture_path.py). These hold only once a notebook's slide text is written, and the
  figure type only once its figures are redrawn: decks not yet in CONVERTED_DECKS (or, for the
  figures, FIGURES_REDRAWN_DECKS) are measured and reported as skipped, saying what was measured;
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

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import nbformat
import pytest
from helpers import CHROMIUM_BASE_FLAGS, find_browser, start_chromium, wait_for

pytestmark = pytest.mark.slow  # a minute: `make unit` leaves it out

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "build" / "screenshots"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
DECK = "02_vae_and_the_elbo"  # the most equations and figures
WIDGET_NOTEBOOKS = [p for p in NOTEBOOKS if '"interactive(children' in p.read_text()]
WIDTH, HEIGHT = 1280, 720
DECKS = [p.stem for p in NOTEBOOKS]

# Every notebook carries its slide text (cell metadata `slide`, issue #26): the words, notes and
# promise thresholds below hold for every deck, a new notebook's too.
CONVERTED_DECKS = DECKS
# The figure-type threshold (14 pt as shown) holds for every deck but these, which are measured all
# the same and reported as skipped with their numbers: 02's samples slide shows two figures at 16 px.
FIGURES_NOT_YET_REDRAWN = ["02_vae_and_the_elbo"]
FIGURES_REDRAWN_DECKS = [deck for deck in DECKS if deck not in FIGURES_NOT_YET_REDRAWN]
MAX_MEDIAN_WORDS, MAX_WORDS = 45, 90  # words of visible text per slide
MIN_NOTES_SHARE = 0.5  # "speaker notes on most slides"
MIN_TABLE_PX, MIN_CODE_PX = 20.0, 18.0
MIN_FIGURE_PX = 14 * 96 / 72  # 14 pt on the 1280x720 slide

CHROMIUM_FLAGS = [
    *CHROMIUM_BASE_FLAGS,
    "--hide-scrollbars",
    f"--window-size={WIDTH},{HEIGHT}",
    # The network, blocked: no name resolves but 127.0.0.1, and anything else goes to a dead proxy.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]

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

IMAGES_JS = """
return [...document.images].map(i => ({src: i.src.slice(0, 60), complete: i.complete, width: i.naturalWidth}));
"""

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


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the built folder and remembers every (status, path) it answered."""

    served: list[tuple[int, str]]

    def log_request(self, code="-", size="-"):
        self.served.append((int(code) if str(code).isdigit() else 0, self.path))

    def log_message(self, *args):
        pass


class Browser:
    """Chromium at 1280x720 with the network blocked, its requests logged, on a local server."""

    def __init__(self, root: Path, workdir: Path):
        self.driver = start_chromium(workdir, CHROMIUM_FLAGS, "slides and book browser test", logging=True)
        self.served: list[tuple[int, str]] = []
        handler = type("Handler", (_Handler,), {"served": self.served})
        self.server = _Server(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        self.driver.set_script_timeout(60)
        self.requested: list[str] = []

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base}/{path}")
        wait_for(lambda: self.js("return document.readyState") == "complete", 30, f"{path} to load")
        if self.js("return !!document.querySelector('script[src*=\"mathjax/\"]')"):  # a page without math has none
            wait_for(
                lambda: self.js("return !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"),
                30,
                f"MathJax to start on {path}",
            )
            self.driver.execute_async_script(
                "MathJax.startup.promise.then(() => arguments[arguments.length - 1](true))"
            )
        self.driver.execute_async_script("document.fonts.ready.then(() => arguments[arguments.length - 1](true))")
        wait_for(lambda: all(i["complete"] for i in self.images()), 30, f"the images of {path}")
        self._collect_requests()

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def images(self) -> list[dict]:
        return self.js(IMAGES_JS)

    def _collect_requests(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])

    def off_machine(self) -> list[str]:
        self._collect_requests()
        # Loopback is this machine; the browser's own pages (chrome://, its new-tab page) are no network.
        own = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:", "chrome:", "chrome-untrusted:")
        return sorted({url for url in self.requested if not url.startswith(own)})

    def failed(self) -> list[tuple[int, str]]:
        # /favicon.ico is the browser's own guess, asked of any site without an icon.
        return [(code, path) for code, path in self.served if code >= 400 and path != "/favicon.ico"]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self.server.shutdown()
            self.server.server_close()


# What build/slides and build/book are made from: newer than the built pages means they are stale.
SITE_INPUTS = ["tools/build_slides.py", "tools/build_book.py", "tools/notebook_copies.py", "tools/slides_template",
               "book", "README.md", "pyproject.toml", "requirements.lock"]  # fmt: skip


def _newest_input() -> tuple[float, Path]:
    paths = list(NOTEBOOKS)
    for name in SITE_INPUTS:
        path = REPO / name
        paths += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return max((p.stat().st_mtime, p) for p in paths if p.exists())


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def built_site_is_current(build: Path = REPO / "build") -> tuple[bool, str]:
    """Whether build/ holds slides and a book made from today's files, and why not."""
    pages = [build / "slides" / "index.html", build / "book" / "index.html"]
    pages += [build / "slides" / f"{nb.stem}.slides.html" for nb in NOTEBOOKS]
    pages += [build / "book" / "notebooks" / f"{nb.stem}.html" for nb in NOTEBOOKS]
    missing = [p for p in pages if not p.is_file()]
    if missing:
        return False, f"{_shown(missing[0])} is missing"
    oldest = min((p.stat().st_mtime, p) for p in pages)
    newest = _newest_input()
    if newest[0] > oldest[0]:
        return False, f"{_shown(newest[1])} is newer than {_shown(oldest[1])}"
    return True, "every page is newer than everything it is built from"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Every deck and the book: those of `make slides` and `make book` when current, else built here."""
    find_browser("slides and book browser test")  # skip at once where there is no browser
    if os.environ.get("VAE_SITE_DIR"):  # a site built elsewhere, taken as it is (while working on the tools)
        return Path(os.environ["VAE_SITE_DIR"])
    current, why = built_site_is_current()
    if current and os.environ.get("VAE_SITE_REBUILD") != "1":
        print(f"using build/slides and build/book: {why}")
        return REPO / "build"
    print(f"building the slides and the book into a temporary folder: {why}")
    root = tmp_path_factory.mktemp("site")
    python = sys.executable
    subprocess.run(
        [python, "tools/build_slides.py", *map(str, NOTEBOOKS), "--out", str(root / "slides")], cwd=REPO, check=True
    )
    subprocess.run(
        [python, "tools/build_book.py", *map(str, NOTEBOOKS), "--out", str(root / "book")], cwd=REPO, check=True
    )
    return root


def test_built_site_counts_as_stale_when_an_input_is_newer(tmp_path):
    """The freshness check the site fixture relies on: a missing page, then an older page, is stale."""
    assert built_site_is_current(tmp_path)[0] is False
    pages = [tmp_path / "slides" / "index.html", tmp_path / "book" / "index.html"]
    pages += [tmp_path / "slides" / f"{nb.stem}.slides.html" for nb in NOTEBOOKS]
    pages += [tmp_path / "book" / "notebooks" / f"{nb.stem}.html" for nb in NOTEBOOKS]
    for page in pages:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("x")
    newest = _newest_input()[0]
    for page in pages:
        os.utime(page, (newest + 10, newest + 10))
    assert built_site_is_current(tmp_path) == (True, "every page is newer than everything it is built from")
    os.utime(pages[0], (newest - 10, newest - 10))
    current, why = built_site_is_current(tmp_path)
    assert current is False and "is newer than" in why


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    b = Browser(site, tmp_path_factory.mktemp("browser"))
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


def test_jupyterlab_rise_presents_the_slide_copy(site, browser, tmp_path):
    """`make lab LAB_DIR=build/slides`: jupyterlab-rise shows the copy as reveal.js slides."""
    from test_jupyterlab_browser import _LabServer

    server = _LabServer(tmp_path, site / "slides")
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
        folder = ARTIFACTS / "slides" / stem
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


def _figure_points(nb: nbformat.NotebookNode) -> list[float]:
    """The smallest type (pt) of each figure the deck shows, in order, as the code that drew it
    asks for (tools/build_slides.py's `type_points`: 14 pt after the notebook imported
    vae_lib.notebook.plotting, else matplotlib's 10, less where a `fontsize=` says so). Only true
    of outputs stored after that code ran: re-execute a notebook after changing its figures."""
    from helpers import load_script

    points = load_script("tools/build_slides.py").type_points(nb)
    return [
        points[k]
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and "lecture" in cell.metadata.get("tags", [])
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def _png_dpi(data) -> float:
    import base64
    import struct

    raw = base64.b64decode("".join(data))
    k = raw.find(b"pHYs")
    if k < 0:
        return 100.0
    per_metre, _, unit = struct.unpack(">IIB", raw[k + 4 : k + 13])
    return per_metre * 0.0254 if unit == 1 else 100.0


def _figure_type_px(site: Path, stem: str, report: list[dict]) -> list[tuple[str, float]]:
    """(slide, smallest type in px as shown) of each figure of the deck, read from the slide copy
    the deck was built from (build/slides/NN_name.ipynb: the notebook's cells, code and outputs)."""
    nb = nbformat.read(site / "slides" / f"{stem}.ipynb", as_version=4)
    points = _figure_points(nb)
    dpis = [
        _png_dpi(o["data"]["image/png"])
        for c in nb.cells
        if c.cell_type == "code" and "lecture" in c.metadata.get("tags", [])
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    shown = [(s["slide"], f) for s in report for f in s["figures"]]
    assert len(shown) == len(points), f"{stem}: {len(shown)} figures on the slides, {len(points)} on the path"
    return [
        (slide, pt * dpi / 72 * f["shown"] / f["natural"])
        for (slide, f), pt, dpi in zip(shown, points, dpis, strict=True)
    ]


@pytest.mark.parametrize("stem", DECKS)
def test_tables_code_and_figures_are_large_enough_to_read(site, browser, stem):
    report = _deck_report(browser, stem)
    tables = [(s["slide"], round(s["table_px"], 1)) for s in report if s["table_px"] and s["table_px"] < MIN_TABLE_PX]
    code = [(s["slide"], round(s["code_px"], 1)) for s in report if s["code_px"] and s["code_px"] < MIN_CODE_PX]
    assert not tables, f"{stem}: tables under {MIN_TABLE_PX} px (slide, px): {tables}"
    assert not code, f"{stem}: code or printed output under {MIN_CODE_PX} px (slide, px): {code}"
    figures = _figure_type_px(site, stem, report)
    small = [(slide, round(px, 1)) for slide, px in figures if px < MIN_FIGURE_PX]
    print(f"{stem}: smallest figure type {min((px for _, px in figures), default=0):.1f} px")
    if stem not in FIGURES_REDRAWN_DECKS:
        pytest.skip(
            f"{stem} is not in FIGURES_REDRAWN_DECKS: figures under {MIN_FIGURE_PX:.1f} px (slide, px): {small}"
        )
    assert not small, f"{stem}: figures whose smallest type is under 14 pt on the slide (slide, px): {small}"


@pytest.mark.parametrize("stem", DECKS)
def test_each_slide_is_short_has_notes_and_keeps_its_promises(browser, stem):
    import statistics

    from helpers import load_script

    report = _deck_report(browser, stem)
    words = [s["words"] for s in report]
    median, most = statistics.median(words), max(words)
    notes = sum(s["notes"] > 0 for s in report) / len(report)
    long = [(s["slide"], s["words"], s["text"]) for s in report if s["words"] > MAX_WORDS]
    lp = load_script("tools/lecture_path.py")
    promises = lp.check_promises(nbformat.read(REPO / "notebooks" / f"{stem}.ipynb", as_version=4), stem)
    measured = (
        f"{stem}: {len(report)} slides, {sum(s['steps'] for s in report)} steps, words per slide median "
        f"{median:g} and max {most}, speaker notes on {notes:.0%} of the slides, {len(promises)} promises "
        "without output"
    )
    print(measured)
    if stem not in CONVERTED_DECKS:
        pytest.skip(f"{stem} is not in CONVERTED_DECKS: measured {measured}")
    assert median <= MAX_MEDIAN_WORDS, f"{measured}: median over {MAX_MEDIAN_WORDS}"
    assert not long, f"{stem}: slides over {MAX_WORDS} words (slide, words, start): {long}"
    assert notes >= MIN_NOTES_SHARE, f"{measured}: notes on fewer than {MIN_NOTES_SHARE:.0%}"
    assert not promises, "\n".join(map(str, promises))


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


def test_the_index_links_a_pdf_handout_of_each_deck_with_a_page_per_slide(site, browser):
    browser.open("slides/index.html")
    links = browser.js("return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    for stem in DECKS:
        assert f"{stem}.slides.html" in links and f"{stem}.pdf" in links, f"the index lacks {stem}'s deck or PDF"
        pdf = (site / "slides" / f"{stem}.pdf").read_bytes()
        pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
        slides = len(_deck_report(browser, stem)) if stem in _REPORTS else None
        assert pdf.startswith(b"%PDF") and pages > 5, f"{stem}.pdf: {pages} pages"
        if slides is not None:
            assert pages == slides, f"{stem}.pdf has {pages} pages for {slides} slides"
