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
- the book's index links every notebook page, and its collapsed solutions stay collapsed.

Screenshots at 1280x720 land in artifacts/ (ignored by git): the title slide, a slide with an
equation, a slide with a figure, the book's index, a notebook page, its math and its exercises.

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
ARTIFACTS = REPO / "artifacts"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
DECK = "02_vae_and_the_elbo"  # the most equations and figures
WIDGET_NOTEBOOKS = [p for p in NOTEBOOKS if '"interactive(children' in p.read_text()]
WIDTH, HEIGHT = 1280, 720

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
copy.querySelectorAll(hidden).forEach(e => e.remove());
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
    _assert_math_rendered(browser, ".reveal .slides", at_least=50)
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
