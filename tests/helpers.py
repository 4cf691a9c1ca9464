"""Helpers shared by the tests (imported as `from helpers import ...`; pytest puts tests/ on the path)."""

import importlib.util
import shutil
import time
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


def find_browser(what: str) -> tuple[str, str]:
    """The system Chromium and chromedriver; skips (saying why) where they are not installed.
    `what` names the test in the message."""
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
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
