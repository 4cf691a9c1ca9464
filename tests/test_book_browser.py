"""The book as a reader uses it, in Chromium: on a phone (390x844) and on a desktop (1280x800).

tools/build_book.py builds the book over every notebook into a temporary folder; a local HTTP
server on 127.0.0.1 serves it to Debian's Chromium (headless, through Selenium and the system
chromedriver, with every other host unresolvable). It checks:

- the sidebar button: on the phone the sidebar is hidden until the button is pressed, and then
  its links are on screen (book/_static/sidebar-toggle.js; the pinned theme binds its handlers
  to a hidden twin of the button); on the desktop the button hides the sidebar and brings it back;
- display equations fit the text column and no page scrolls sideways, at both widths
  (book/_static/book.css lets a wide one scroll inside the column);
- the landing page is for learners (what you will learn, the notebooks in order with the
  reading times they state, how to run them) and its Binder link and every notebook's launch
  button use the repository's one address (pyproject.toml);
- the References page lists the cited papers, and no local file failed to load.

Screenshots land in artifacts/ (ignored by git): book_phone_closed, book_phone_sidebar,
book_phone_math, book_desktop_sidebar_hidden, book_landing, book_references.
Skips (with the reason) only where no Chromium/chromedriver is installed.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from functools import partial

import nbformat
import pytest
from helpers import CHROMIUM_BASE_FLAGS, REPO, find_browser, load_script, start_chromium, wait_for

pytestmark = pytest.mark.slow  # builds the book (seconds) and opens every page twice

ARTIFACTS = REPO / "artifacts"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
PAGE = "02_vae_and_the_elbo"  # the most display equations
PHONE, DESKTOP = (390, 844), (1280, 800)
FLAGS = [
    *CHROMIUM_BASE_FLAGS,
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]

# Whether the sidebar's link to a page is on screen: laid out, inside the window, and what the
# browser would click at its centre (not covered by the page or hidden in a closed drawer).
LINK_ON_SCREEN_JS = """
const a = [...document.querySelectorAll('.bd-sidebar-primary a.reference.internal, dialog a.reference.internal')]
  .find(a => a.getAttribute('href').endsWith(arguments[0]));
if (!a) return 'no link';
const r = a.getBoundingClientRect();
if (r.width === 0 || r.height === 0 || r.right <= 0 || r.left >= innerWidth || r.top < 0 || r.top + 8 > innerHeight)
  return false;
const hit = document.elementFromPoint(Math.min(r.left + 10, innerWidth - 1), r.top + Math.min(8, r.height / 2));
return !!hit && (hit === a || a.contains(hit) || hit.contains(a));
"""
VISIBLE_TOGGLES_JS = """
return [...document.querySelectorAll('.primary-toggle')].filter(b => {
  const r = b.getBoundingClientRect(); return b.offsetParent !== null && r.width > 0 && r.height > 0; });
"""
# Every display equation against the article's text column, and the page's width against the window.
MATH_FIT_JS = """
const col = document.querySelector('article.bd-article').getBoundingClientRect();
const wide = [...document.querySelectorAll("mjx-container[display='true']")].map(m => {
  const r = m.getBoundingClientRect();
  return {left: Math.round(r.left), right: Math.round(r.right), tex: (m.parentElement.textContent || '').slice(0, 60)};
}).filter(r => r.left < col.left - 1 || r.right > col.right + 1);
return {column: [Math.round(col.left), Math.round(col.right)], equations:
  document.querySelectorAll("mjx-container[display='true']").length, outside: wide,
  page: document.scrollingElement.scrollWidth, window: innerWidth};
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    failed: list[tuple[int, str]]

    def log_request(self, code="-", size="-"):
        if str(code).isdigit() and int(code) >= 400 and self.path != "/favicon.ico":
            self.failed.append((int(code), self.path))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The book of every notebook, built here, served on 127.0.0.1: (base URL, the failures the server saw)."""
    find_browser("book browser test")
    root = tmp_path_factory.mktemp("book")
    command = [sys.executable, "tools/build_book.py", *map(str, NOTEBOOKS), "--out", str(root / "book")]
    subprocess.run(command, cwd=REPO, check=True)
    failed: list[tuple[int, str]] = []
    handler = partial(type("Handler", (_Handler,), {"failed": failed}), directory=str(root / "book"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", failed
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def driver(book, tmp_path_factory):
    d = start_chromium(tmp_path_factory.mktemp("chromium"), FLAGS, "book browser test")
    d.set_script_timeout(60)
    yield d
    d.quit()


def _size(driver, size: tuple[int, int]) -> None:
    width, height = size
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def _open(driver, book, path: str, size: tuple[int, int]) -> None:
    _size(driver, size)
    driver.get(f"{book[0]}/{path}")
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, f"{path} to load")
    if driver.execute_script("return !!document.querySelector('script[src*=\"mathjax/\"]')"):
        wait_for(
            lambda: driver.execute_script("return !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"),
            30,
            f"MathJax on {path}",
        )
        driver.execute_async_script("MathJax.startup.promise.then(() => arguments[arguments.length - 1](true))")
    driver.execute_async_script("document.fonts.ready.then(() => arguments[arguments.length - 1](true))")


def _screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _the_visible_toggle(driver):
    toggles = driver.execute_script(VISIBLE_TOGGLES_JS)
    assert len(toggles) == 1, f"{len(toggles)} visible sidebar buttons (.primary-toggle)"
    return toggles[0]


def test_the_sidebar_button_opens_the_sidebar_on_a_phone(driver, book):
    _open(driver, book, f"notebooks/{PAGE}.html", PHONE)
    target = f"{NOTEBOOKS[0].stem}.html"  # the first notebook: near the top of the sidebar
    on_screen = lambda: driver.execute_script(LINK_ON_SCREEN_JS, target)  # noqa: E731
    assert on_screen() is False, "the sidebar should start hidden at 390 px"
    _screenshot(driver, "book_phone_closed")
    _the_visible_toggle(driver).click()
    wait_for(on_screen, 5, "the sidebar's links after pressing its button at 390 px", lambda: f"got {on_screen()}")
    _screenshot(driver, "book_phone_sidebar")
    from selenium.webdriver.common.action_chains import ActionChains  # (helpers reports a missing selenium)
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # Escape closes the drawer
    wait_for(lambda: on_screen() is False, 5, "the sidebar to close on Escape")
    # The page's contents (the right-hand sidebar) open the same way, from the other button.
    contents = [b for b in driver.find_elements("css selector", ".secondary-toggle") if b.is_displayed()]
    assert len(contents) == 1, f"{len(contents)} visible contents buttons (.secondary-toggle)"
    contents[0].click()
    opened = "return !!document.querySelector('#pst-secondary-sidebar-modal[open] .page-toc')"
    wait_for(lambda: driver.execute_script(opened), 5, "the page's contents after pressing their button at 390 px")
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()


def test_the_sidebar_button_hides_and_shows_the_sidebar_on_a_desktop(driver, book):
    _open(driver, book, f"notebooks/{PAGE}.html", DESKTOP)
    target = f"{NOTEBOOKS[0].stem}.html"  # the first notebook: near the top of the sidebar
    on_screen = lambda: driver.execute_script(LINK_ON_SCREEN_JS, target)  # noqa: E731
    assert on_screen() is True, "the sidebar should be open on a desktop"
    _the_visible_toggle(driver).click()
    wait_for(lambda: on_screen() is False, 5, "the sidebar to collapse at 1280 px", lambda: f"got {on_screen()}")
    _screenshot(driver, "book_desktop_sidebar_hidden")
    _the_visible_toggle(driver).click()
    wait_for(lambda: on_screen() is True, 5, "the sidebar to come back at 1280 px")


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_display_equations_fit_the_column(driver, book, size):
    problems = {}
    for nb in NOTEBOOKS:
        _open(driver, book, f"notebooks/{nb.stem}.html", size)
        fit = driver.execute_script(MATH_FIT_JS)
        if fit["outside"] or fit["page"] > fit["window"] + 1:
            problems[nb.stem] = fit
        if nb.stem == PAGE and size == PHONE:
            driver.execute_script("document.querySelector(\"mjx-container[display='true']\").scrollIntoView()")
            _screenshot(driver, "book_phone_math")
    assert not problems, f"equations wider than the column, or pages wider than the window: {problems}"


def test_the_landing_page_is_for_learners_and_links_binder_at_the_one_address(driver, book):
    builder = load_script("tools/build_book.py")
    repository = builder.repository_url()
    _open(driver, book, "index.html", DESKTOP)
    text = driver.execute_script("return document.querySelector('article').innerText")
    for heading in ("What you will learn", "The path through the notebooks", "How to run them"):
        assert heading in text, f"the landing page has no section {heading!r}"
    for word in ("NBVAL", "maintainer", "CI "):
        assert word not in text, f"the landing page speaks of {word!r}"
    rows = driver.execute_script(
        "return [...document.querySelectorAll('article table tbody tr')].map(r => ({"
        "href: r.querySelector('a').getAttribute('href'), text: r.innerText}))"
    )
    assert [r["href"] for r in rows] == [f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS]
    for row, nb in zip(rows, NOTEBOOKS, strict=True):
        minutes = builder.reading_minutes(nbformat.read(nb, as_version=4))
        assert minutes is None or f"about {minutes} min" in row["text"], (nb.stem, row)
    links = driver.execute_script("return [...document.querySelectorAll('article a')].map(a => a.href)")
    assert builder.binder_url(repository, f"notebooks/{NOTEBOOKS[0].name}") in links
    assert repository in links
    _screenshot(driver, "book_landing")

    _open(driver, book, f"notebooks/{PAGE}.html", DESKTOP)
    launch = driver.execute_script("return [...document.querySelectorAll('a')].map(a => a.href)")
    assert builder.binder_url(repository, f"notebooks/{PAGE}.ipynb") in launch, "no launch button to Binder"


def test_the_references_page_lists_the_cited_papers(driver, book):
    builder = load_script("tools/build_book.py")
    _open(driver, book, "references.html", DESKTOP)
    items = driver.execute_script("return [...document.querySelectorAll('article li')].map(li => li.innerText)")
    assert len(items) >= 10 and all("Cited in" in item for item in items), items[:3]
    assert any("Importance Weighted Autoencoders" in item for item in items)
    assert sorted(builder.bibliography()) and len(items) <= len(builder.bibliography())
    _screenshot(driver, "book_references")
    assert not book[1], f"local files that failed to load (status, path): {book[1]}"
