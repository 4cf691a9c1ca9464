"""The book as a reader uses it, in Chromium: on a phone (390x844) and on a desktop (1280x800).

It opens build/book when `make book` built it from today's files, else the book built into a
temporary folder (the `built_book` fixture, tests/conftest.py; the freshness check and the browser
are tests/helpers.py's, shared with test_slides_book_browser), served from a local HTTP server on
127.0.0.1 to Debian's Chromium (headless, through Selenium and the system chromedriver, with
every other host unresolvable). It checks:

- the sidebar button: on the phone the sidebar is hidden until the button is pressed, and then
  its links are on screen (book/_static/sidebar-toggle.js; the pinned theme binds its handlers
  to a hidden twin of the button); on the desktop the button hides the sidebar and brings it back;
- display equations fit the text column and no page scrolls sideways, at both widths
  (book/_static/book.css lets a wide one scroll inside the column);
- the landing page is for learners (what you will learn, the notebooks in order with the
  reading times they state, how to run them) and its Binder link and every notebook's launch
  button use the repository's one address (pyproject.toml);
- the References page lists every paper the notebooks cite, with its link and the notebooks
  citing it; every entry of book/references.toml is cited (but those in UNCITED_ENTRIES, which
  must be exactly the uncited ones); no request left the machine and no local file failed to load.

Screenshots land in build/screenshots/ (ignored by git): book_phone_closed, book_phone_sidebar,
book_phone_math, book_desktop_sidebar_hidden, book_landing, book_references.
Skips (with the reason) only where no Chromium/chromedriver is installed.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from helpers import NOTEBOOKS, Browser, tool, wait_for

pytestmark = pytest.mark.slow  # opens every page twice (and builds the book where build/book is stale)

PAGE = "02_vae_and_the_elbo"  # the most display equations
PHONE, DESKTOP = (390, 844), (1280, 800)
# Entries of book/references.toml that no notebook cites (the References page leaves them out):
# each is to be cited or removed, and then taken off this list.
UNCITED_ENTRIES: set[str] = set()

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


@pytest.fixture(scope="module")
def browser(built_book, tmp_path_factory):
    b = Browser(built_book, tmp_path_factory.mktemp("chromium"), DESKTOP, "book browser test")
    yield b
    b.close()


def _open(browser: Browser, path: str, size: tuple[int, int]) -> None:
    browser.resize(size)
    browser.open(path)


def _the_visible_toggle(browser):
    toggles = browser.js(VISIBLE_TOGGLES_JS)
    assert len(toggles) == 1, f"{len(toggles)} visible sidebar buttons (.primary-toggle)"
    return toggles[0]


def test_the_sidebar_button_opens_the_sidebar_on_a_phone(browser):
    _open(browser, f"notebooks/{PAGE}.html", PHONE)
    target = f"{NOTEBOOKS[0].stem}.html"  # the first notebook: near the top of the sidebar
    on_screen = lambda: browser.js(LINK_ON_SCREEN_JS, target)  # noqa: E731
    assert on_screen() is False, "the sidebar should start hidden at 390 px"
    browser.screenshot("book_phone_closed")
    _the_visible_toggle(browser).click()
    wait_for(on_screen, 5, "the sidebar's links after pressing its button at 390 px", lambda: f"got {on_screen()}")
    browser.screenshot("book_phone_sidebar")
    from selenium.webdriver.common.action_chains import ActionChains  # (helpers reports a missing selenium)
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser.driver).send_keys(Keys.ESCAPE).perform()  # Escape closes the drawer
    wait_for(lambda: on_screen() is False, 5, "the sidebar to close on Escape")
    # The page's contents (the right-hand sidebar) open the same way, from the other button.
    contents = [b for b in browser.driver.find_elements("css selector", ".secondary-toggle") if b.is_displayed()]
    assert len(contents) == 1, f"{len(contents)} visible contents buttons (.secondary-toggle)"
    contents[0].click()
    opened = "return !!document.querySelector('#pst-secondary-sidebar-modal[open] .page-toc')"
    wait_for(lambda: browser.js(opened), 5, "the page's contents after pressing their button at 390 px")
    ActionChains(browser.driver).send_keys(Keys.ESCAPE).perform()


def test_the_sidebar_button_hides_and_shows_the_sidebar_on_a_desktop(browser):
    _open(browser, f"notebooks/{PAGE}.html", DESKTOP)
    target = f"{NOTEBOOKS[0].stem}.html"  # the first notebook: near the top of the sidebar
    on_screen = lambda: browser.js(LINK_ON_SCREEN_JS, target)  # noqa: E731
    assert on_screen() is True, "the sidebar should be open on a desktop"
    _the_visible_toggle(browser).click()
    wait_for(lambda: on_screen() is False, 5, "the sidebar to collapse at 1280 px", lambda: f"got {on_screen()}")
    browser.screenshot("book_desktop_sidebar_hidden")
    _the_visible_toggle(browser).click()
    wait_for(lambda: on_screen() is True, 5, "the sidebar to come back at 1280 px")


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_display_equations_fit_the_column(browser, size):
    problems = {}
    for nb in NOTEBOOKS:
        _open(browser, f"notebooks/{nb.stem}.html", size)
        fit = browser.js(MATH_FIT_JS)
        if fit["outside"] or fit["page"] > fit["window"] + 1:
            problems[nb.stem] = fit
        if nb.stem == PAGE and size == PHONE:
            browser.js("document.querySelector(\"mjx-container[display='true']\").scrollIntoView()")
            browser.screenshot("book_phone_math")
    assert not problems, f"equations wider than the column, or pages wider than the window: {problems}"


def test_the_landing_page_is_for_learners_and_links_binder_at_the_one_address(browser):
    builder = tool("build_book")
    repository = builder.repository_url()
    _open(browser, "index.html", DESKTOP)
    text = browser.js("return document.querySelector('article').innerText")
    for heading in ("What you will learn", "The path through the notebooks", "How to run them"):
        assert heading in text, f"the landing page has no section {heading!r}"
    for word in ("NBVAL", "maintainer", "CI "):
        assert word not in text, f"the landing page speaks of {word!r}"
    rows = browser.js(
        "return [...document.querySelectorAll('article table tbody tr')].map(r => ({"
        "href: r.querySelector('a').getAttribute('href'), text: r.innerText}))"
    )
    assert [r["href"] for r in rows] == [f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS]
    for row, nb in zip(rows, NOTEBOOKS, strict=True):
        minutes = builder.reading_minutes(nbformat.read(nb, as_version=4))
        assert minutes is not None, f"{nb.stem} states no reading time (`**Reading time**: about N minutes`)"
        assert f"about {minutes} min" in row["text"], (nb.stem, row)
    links = browser.js("return [...document.querySelectorAll('article a')].map(a => a.href)")
    assert builder.binder_url(repository, f"notebooks/{NOTEBOOKS[0].name}") in links
    assert repository in links
    browser.screenshot("book_landing")

    _open(browser, f"notebooks/{PAGE}.html", DESKTOP)
    launch = browser.js("return [...document.querySelectorAll('a')].map(a => a.href)")
    assert builder.binder_url(repository, f"notebooks/{PAGE}.ipynb") in launch, "no launch button to Binder"


# Each item of the References page: its text and where its links go.
REFERENCE_ITEMS_JS = """
return [...document.querySelectorAll('article li')].map(li => ({
  text: li.innerText, links: [...li.querySelectorAll('a')].map(a => a.href)}));
"""


def _letters(text: str) -> str:
    """Only the letters and digits, lower case: Sphinx writes "Don't" and "--" as "Don’t" and "–"."""
    return re.sub(r"\W+", "", text.lower())


def test_the_references_page_lists_every_cited_paper_with_its_links(browser):
    """Every paper the notebooks cite (author and year in their markdown) that book/references.toml
    describes is an item of the page, with its link and a link to each notebook citing it; nothing
    else is. (A citation without an entry is test_slides_and_book_build's failure.)"""
    builder, copies = tool("build_book"), tool("notebook_copies")
    entries = builder.bibliography()
    cited = builder.cited_by([(f"notebooks/{nb.stem}", copies.read(nb)) for nb in NOTEBOOKS])
    _open(browser, "references.html", DESKTOP)
    items = browser.js(REFERENCE_ITEMS_JS)
    listed = [key for key in sorted(cited) if key in entries]
    assert len(items) == len(listed), f"{len(items)} items on the page for {len(listed)} cited papers: {listed}"
    for key in listed:
        title = re.search(r"\*(.+?)\*", entries[key]["text"]).group(1)
        found = [item for item in items if _letters(title) in _letters(item["text"])]
        assert len(found) == 1, f"{key} ({title!r}) is {len(found)} times on the References page"
        links = found[0]["links"]
        if entries[key].get("url"):
            assert entries[key]["url"] in links, f"{key}: no link to {entries[key]['url']}: {links}"
        for page in cited[key]:
            assert any(link.endswith(f"/{page}.html") for link in links), f"{key}: no link to {page}, which cites it"
    browser.screenshot("book_references")
    assert not browser.off_machine(), f"requests that left the machine: {browser.off_machine()}"
    assert not browser.failed(), f"local files that failed to load (status, path): {browser.failed()}"


def test_every_entry_of_the_bibliography_is_cited_by_a_notebook():
    builder, copies = tool("build_book"), tool("notebook_copies")
    cited = builder.cited_by([(f"notebooks/{nb.stem}", copies.read(nb)) for nb in NOTEBOOKS])
    uncited = set(builder.bibliography()) - set(cited)
    assert not uncited - UNCITED_ENTRIES, (
        f"book/references.toml has entries no notebook cites (cite them, or remove them): {sorted(uncited)}"
    )
    assert not UNCITED_ENTRIES - uncited, (
        f"cited now, or gone from book/references.toml: take {sorted(UNCITED_ENTRIES - uncited)} off UNCITED_ENTRIES"
    )
