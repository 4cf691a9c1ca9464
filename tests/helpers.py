"""Helpers shared by the tests (imported as `from helpers import ...`; pytest puts tests/ on the path)."""

import base64
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path
from types import ModuleType

import pytest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError as exc:  # a missing pinned dependency fails the browser tests, it does not skip them
    webdriver = Service = None
    SELENIUM_IMPORT_ERROR = exc
else:
    SELENIUM_IMPORT_ERROR = None

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
SCREENSHOTS = REPO / "build" / "screenshots"  # ignored by git


def load_script(relative_path: str) -> ModuleType:
    """Import a script of the repository (a tool or a benchmark, not a package) as a module."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Headless Debian Chromium as root, quiet on a closed network: the flags both browser tests start it with.
CHROMIUM_BASE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# The network, blocked: no name resolves but 127.0.0.1, and anything else goes to a dead proxy.
OFFLINE_FLAGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]


@functools.cache
def tool(name: str) -> ModuleType:
    """tools/<name>.py, imported once per test session (see :func:`load_script`)."""
    return load_script(f"tools/{name}.py")


def find_browser(what: str) -> tuple[str, str]:
    """The system Chromium and chromedriver; skips (saying why) where they are not installed.
    `what` names the test in the message."""
    chromium = tool("build_slides").find_chromium()  # the one the PDF handouts are printed with
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        missing = [name for name, p in (("chromium", chromium), ("chromedriver", chromedriver)) if not p]
        pytest.skip(
            f"no {' or '.join(missing)} on PATH: the {what} needs a system "
            "browser (Debian: apt-get install -y chromium chromium-driver)"
        )
    return chromium, chromedriver


def start_chromium(workdir: Path, flags: list[str], what: str, logging: bool = False):
    """Debian's Chromium through Selenium and the system chromedriver, with `flags` and a fresh profile
    in `workdir` (see :func:`find_browser`); fails where selenium is missing. `logging` records the
    network log (performance)."""
    chromium, chromedriver = find_browser(what)
    if SELENIUM_IMPORT_ERROR is not None:
        pytest.fail(f"selenium is not installed (pip install -e '.[test]'): {SELENIUM_IMPORT_ERROR}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'chromium-profile'}")
    if logging:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # With an explicit driver path Selenium never runs Selenium Manager (no download).
    service = Service(executable_path=chromedriver, log_output=str(workdir / "chromedriver.log"))
    return webdriver.Chrome(service=service, options=options)


def wait_for(condition, timeout_s: float, what: str, describe=lambda: "", poll_s: float = 0.25):
    """Poll ``condition`` until it returns something truthy, and return that; fail naming ``what``
    (and what ``describe()`` says) after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}. {describe()}".rstrip(". ") + ".")
        time.sleep(poll_s)


# ------------------------------------------------------------------ the built slides and book
# What `make slides` (build/slides) and `make book` (build/book) are made from, besides the notebooks:
# a file here newer than a built page means the page is stale. test_slides_book_browser checks that
# every local module the builders import and every file they name (build_slides.PLOTTING,
# TEMPLATE_DIR, build_book.CONF_DIR) is listed.
SITE_INPUTS = {
    "slides": ["tools/build_slides.py", "tools/lecture_path.py", "tools/notebook_copies.py", "tools/slides_template",
               "vae_lib/notebook/plotting.py", "README.md", "pyproject.toml", "requirements.lock"],
    "book": ["tools/build_book.py", "tools/notebook_copies.py", "book", "README.md", "pyproject.toml",
             "requirements.lock"],
}  # fmt: skip
SITE_PARTS = tuple(SITE_INPUTS)


def site_pages(build: Path, part: str) -> list[Path]:
    """What the tests read of build/<part>: for the slides every deck, its slide copy (the figure
    check reads it) and its PDF handout; for the book every notebook's page and the References."""
    folder = build / part
    pages = [folder / "index.html"]
    if part == "slides":
        for nb in NOTEBOOKS:
            pages += [folder / f"{nb.stem}.slides.html", folder / f"{nb.stem}.ipynb", folder / f"{nb.stem}.pdf"]
    else:
        pages += [folder / "references.html", *(folder / "notebooks" / f"{nb.stem}.html" for nb in NOTEBOOKS)]
    return pages


def newest_input(part: str) -> tuple[float, Path]:
    """The newest of the notebooks and of SITE_INPUTS[part] (time of last change, path)."""
    paths = list(NOTEBOOKS)
    for name in SITE_INPUTS[part]:
        path = REPO / name
        paths += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return max((p.stat().st_mtime, p) for p in paths if p.exists())


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def built_part_is_current(build: Path, part: str) -> tuple[bool, str]:
    """Whether build/<part> holds everything the tests read, made from today's files, and why not."""
    pages = site_pages(build, part)
    missing = [p for p in pages if not p.is_file()]
    if missing:
        why = f"{shown(missing[0])} is missing"
        if missing[0].suffix == ".pdf":
            why += " (a build made with --no-pdf has no handouts)"
        return False, why
    oldest = min((p.stat().st_mtime, p) for p in pages)
    newest = newest_input(part)
    if newest[0] > oldest[0]:
        return False, f"{shown(newest[1])} is newer than {shown(oldest[1])}"
    return True, "every page is newer than everything it is built from"


def built_site(part: str, tmp_root: Path) -> Path:
    """build/<part> when it is current, else <part> built here into `tmp_root` with the tools over
    every notebook (VAE_SITE_REBUILD=1 always builds). VAE_SITE_DIR names a site built elsewhere
    (while working on the tools): taken as it is, with a warning where it is stale."""
    if os.environ.get("VAE_SITE_DIR"):
        build = Path(os.environ["VAE_SITE_DIR"])
        current, why = built_part_is_current(build, part)
        if not current:
            warnings.warn(f"VAE_SITE_DIR: {part} taken as it is, though stale: {why}", stacklevel=2)
        return build / part
    current, why = built_part_is_current(REPO / "build", part)
    if current and os.environ.get("VAE_SITE_REBUILD") != "1":
        print(f"using build/{part}: {why}")
        return REPO / "build" / part
    print(f"building the {part} into a temporary folder: {why}")
    out = tmp_root / part
    builder = {"slides": "tools/build_slides.py", "book": "tools/build_book.py"}[part]
    subprocess.run([sys.executable, builder, *map(str, NOTEBOOKS), "--out", str(out)], cwd=REPO, check=True)
    return out


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and remembers every (status, path) it answered."""

    served: list[tuple[int, str]]

    def log_request(self, code="-", size="-"):
        self.served.append((int(code) if str(code).isdigit() else 0, self.path))

    def log_message(self, *args):
        pass


IMAGES_JS = """
return [...document.images].map(i => ({src: i.src.slice(0, 60), complete: i.complete, width: i.naturalWidth}));
"""


class Browser:
    """Chromium with the network blocked (OFFLINE_FLAGS) and its requests logged, opening the pages
    of `root` from a local server on 127.0.0.1 at `size` (width, height; :meth:`resize` changes it)."""

    def __init__(self, root: Path, workdir: Path, size: tuple[int, int], what: str):
        flags = [*CHROMIUM_BASE_FLAGS, "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", *OFFLINE_FLAGS]
        self.driver = start_chromium(workdir, flags, what, logging=True)
        self.served: list[tuple[int, str]] = []
        handler = type("Handler", (_Handler,), {"served": self.served})
        self.server = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.resize(size)
        self.driver.set_script_timeout(60)
        self.requested: list[str] = []

    def resize(self, size: tuple[int, int]) -> None:
        """The window as a page sees it; under 600 px wide, a phone's."""
        width, height = size
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def open(self, path: str) -> None:
        """Load `path`, and wait for its MathJax (where it loads one), its fonts and its images."""
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
        """The addresses the browser asked for that are not on this machine."""
        self._collect_requests()
        # Loopback is this machine; the browser's own pages (chrome://, its new-tab page) are no network.
        own = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:", "chrome:", "chrome-untrusted:")
        return sorted({url for url in self.requested if not url.startswith(own)})

    def failed(self) -> list[tuple[int, str]]:
        """The local files the server could not give (status, path)."""
        # /favicon.ico is the browser's own guess, asked of any site without an icon.
        return [(code, path) for code, path in self.served if code >= 400 and path != "/favicon.ico"]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self.server.shutdown()
            self.server.server_close()


def local_imports(tool_path: Path) -> set[str]:
    """The modules of tools/ that `tool_path` imports, and those they import, as repository paths."""
    found: set[str] = set()
    todo = [tool_path]
    while todo:
        source = todo.pop().read_text()
        for name in re.findall(r"^\s*import (\w+)", source, re.M):
            path = REPO / "tools" / f"{name}.py"
            if path.is_file() and shown(path) not in found:
                found.add(shown(path))
                todo.append(path)
    return found


def png(width: int, height: int) -> str:
    """A valid white PNG of that size, base64, as a notebook stores it."""
    rows = b"".join(b"\x00" + b"\xff" * width for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()
