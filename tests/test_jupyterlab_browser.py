"""A notebook runs in JupyterLab, driven through a real browser.

A reader opens the series in JupyterLab and presses Run > Run All Cells. This test does
exactly that: it starts JupyterLab on a free loopback port over a temporary copy of the
notebook's folder, drives Debian's Chromium (headless, through Selenium and the system
chromedriver; nothing is downloaded), runs every cell from the menu, saves the notebook
from the menu, and checks what the reader would see: no error output, a rendered figure,
every code cell executed, and the saved file. A screenshot lands in ``artifacts/`` (ignored by git).

The notebook is ``tests/data/smoke.ipynb``: the series' kernel importing vae_lib, a few
images of the data, one small jitted training step and a figure, in seconds. What the
series' notebooks compute is checked by strict nbval (`make test` and, in Binder's
environment, `make test-portable`); this test checks the path through JupyterLab's UI.

The stored outputs are stripped from the temporary copy first, so every output the test
sees was produced by this run. The repository's notebooks are never touched.

Skips (with the reason) only where no Chromium/chromedriver is installed
(``apt-get install -y chromium chromium-driver``). A missing notebook is a failure.

Override the notebook with ``VAE_BROWSER_TEST_NOTEBOOK``: a file name inside
``notebooks/`` (e.g. ``01_autoencoder.ipynb``, about three minutes), or a path to a
notebook (its folder is copied instead).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from helpers import CHROMIUM_BASE_FLAGS, start_chromium, wait_for

try:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
except ImportError:  # start_chromium fails the test, saying so
    WebDriverException = By = None


pytestmark = pytest.mark.slow  # minutes: `make unit` leaves it out

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
ARTIFACTS_DIR = REPO_ROOT / "artifacts"

SMOKE_NOTEBOOK = REPO_ROOT / "tests" / "data" / "smoke.ipynb"
NOTEBOOK = os.environ.get("VAE_BROWSER_TEST_NOTEBOOK", str(SMOKE_NOTEBOOK))

SERVER_START_TIMEOUT_S = 90
NOTEBOOK_OPEN_TIMEOUT_S = 90
EXECUTION_TIMEOUT_S = 300
SAVE_TIMEOUT_S = 30

# As ENVIRONMENT.md says: headless, as root, and quiet on a closed network.
CHROMIUM_FLAGS = [
    *CHROMIUM_BASE_FLAGS,
    "--window-size=1400,1000",
]

# Lab settings for a deterministic, quiet UI: every cell attached to the DOM (so every
# output can be inspected), no news or update checks (no network), no autosave racing ours.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

# How a Python error looks once JupyterLab renders it as text (IPython's traceback, or
# the one-line form of a SyntaxError that has no "Traceback" header).
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception|Interrupt)(: |:?$)", re.MULTILINE)

STATE_JS = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-CodeCell')];
const indicator = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
return {
  cells: cells.length,
  prompts: cells.map(c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || ''),
  status: indicator ? indicator.getAttribute('data-status') : null,
  kernel: (document.querySelector('.jp-NotebookPanel .jp-KernelName') || {}).textContent || '',
  dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText),
  dirty: document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length,
};
"""

OUTPUTS_JS = """
const outputs = [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')];
return {
  stderr: outputs
    .filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr')
    .map(o => o.innerText),
  images: [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output img')]
    .map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
};
"""


@dataclasses.dataclass
class LabRun:
    """What the browser showed after Run All Cells, and the notebook the UI saved."""

    stderr_texts: list[str]
    images: list[dict]
    saved: nbformat.NotebookNode
    screenshot: Path


def _notebook_source() -> tuple[Path, str]:
    """The folder to copy and the notebook's name inside it; fails when it is missing."""
    given = Path(NOTEBOOK)
    path = given if (given.is_absolute() or len(given.parts) > 1) else NOTEBOOKS_DIR / given
    if not path.is_file():
        pytest.fail(
            f"notebook {path} does not exist: the JupyterLab browser test opens {NOTEBOOK!r} "
            "(set VAE_BROWSER_TEST_NOTEBOOK to test another one)"
        )
    return path.resolve().parent, path.name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strip_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, path)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class _LabServer:
    """A JupyterLab server in its own process group, in a throwaway home for its state."""

    def __init__(self, workdir: Path, root_dir: Path):
        self.token = secrets.token_hex(24)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "jupyterlab.log"
        settings_dir = workdir / "lab-settings"
        for name, value in LAB_SETTINGS.items():
            target = settings_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(value))
        env = dict(os.environ)
        env.update(
            JUPYTER_TOKEN=self.token,  # not on the command line, so not in `ps`
            JUPYTER_CONFIG_DIR=str(workdir / "jupyter-config"),
            JUPYTER_DATA_DIR=str(workdir / "jupyter-data"),
            JUPYTER_RUNTIME_DIR=str(workdir / "jupyter-runtime"),
            IPYTHONDIR=str(workdir / "ipython"),
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as `make lab` runs it
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root_dir}",
            f"--LabApp.user_settings_dir={settings_dir}",
            f"--LabApp.workspaces_dir={workdir / 'lab-workspaces'}",
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")
        self._log = open(self.log_path, "wb")
        # The server's kernels share its process group, so a failure can end them all.
        self.proc = subprocess.Popen(
            command,
            cwd=root_dir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _api(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def kernel_state(self, notebook: str) -> str | None:
        """The server's view of the notebook's kernel: "idle", "busy", ... or None."""
        for session in json.loads(self._api("/api/sessions")):
            if session.get("path") == notebook and session.get("kernel"):
                return session["kernel"].get("execution_state")
        return None

    def _group_alive(self) -> bool:
        self.proc.poll()  # reap the server itself, so a zombie does not count
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with code {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                json.loads(self._api("/api/status"))
                return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        """Ask the server to shut down (it ends its kernels), then make sure."""
        if self.proc.poll() is None:
            try:
                self._api("/api/shutdown", method="POST")
                self.proc.wait(timeout=30)
            except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
                pass
        # Whatever is left in the server's process group (a stuck server, its kernels).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._group_alive():
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.2)
        self._log.close()


def _click_menu(driver, menu: str, command: str) -> None:
    """Open a main-menu entry (e.g. "Run") and click the item bound to ``command``."""
    labels = driver.find_elements(By.CSS_SELECTOR, "#jp-menu-panel .lm-MenuBar-item")
    entry = next((e for e in labels if e.text.strip() == menu), None)
    assert entry is not None, f"no {menu!r} menu in the JupyterLab menu bar"
    entry.click()
    selector = f'.lm-Menu .lm-Menu-item[data-command="{command}"]'
    item = wait_for(
        lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()],
        10,
        f"menu item {command!r} under {menu!r}",
    )[0]
    assert "lm-mod-disabled" not in (item.get_attribute("class") or ""), f"{command} is disabled"
    item.click()


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory) -> LabRun:
    """Open the notebook in JupyterLab, Run All Cells from the menu, save from the menu."""
    source_dir, name = _notebook_source()

    workdir = tmp_path_factory.mktemp("jupyterlab")
    root_dir = workdir / "notebooks"
    shutil.copytree(source_dir, root_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    notebook_path = root_dir / name
    _strip_outputs(notebook_path)

    ARTIFACTS_DIR.mkdir(exist_ok=True)
    screenshot = ARTIFACTS_DIR / f"jupyterlab_{Path(name).stem}.png"
    failure_screenshot = screenshot.with_name(screenshot.stem + "_failure.png")
    for stale in (screenshot, failure_screenshot):
        stale.unlink(missing_ok=True)

    server = _LabServer(workdir, root_dir)
    driver = None
    try:
        server.wait_ready()

        driver = start_chromium(workdir, CHROMIUM_FLAGS, "JupyterLab browser test")

        def state():
            return driver.execute_script(STATE_JS)

        def describe():
            return f"Browser state: {state()}\nServer log:\n{_tail(server.log_path)}"

        driver.get(f"{server.url}/lab/tree/{name}?token={server.token}")

        def opened():
            s = state()
            for dialog in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
                # A notebook without kernel metadata asks which kernel: take the default.
                if "Select Kernel" in dialog.text:
                    dialog.find_element(By.CSS_SELECTOR, ".jp-mod-accept").click()
            kernel_shown = s["kernel"].strip() not in ("", "No Kernel")
            return s["cells"] > 0 and kernel_shown and s["status"] == "idle" and server.kernel_state(name) == "idle"

        wait_for(opened, NOTEBOOK_OPEN_TIMEOUT_S, f"{name} to open with an idle kernel", describe)

        _click_menu(driver, "Run", "runmenu:run-all")

        def finished():
            s = state()
            assert not s["dialogs"], f"JupyterLab showed a dialog while running: {s['dialogs']}"
            ran = any(re.search(r"\[\d+\]", p) for p in s["prompts"])
            queued = any("*" in p for p in s["prompts"])
            return ran and not queued and s["status"] == "idle" and server.kernel_state(name) == "idle"

        wait_for(finished, EXECUTION_TIMEOUT_S, "Run All Cells to finish", describe)

        saved_before = notebook_path.stat().st_mtime_ns
        _click_menu(driver, "File", "docmanager:save")
        wait_for(
            lambda: notebook_path.stat().st_mtime_ns != saved_before and state()["dirty"] == 0,
            SAVE_TIMEOUT_S,
            "the notebook to be saved",
            describe,
        )
        saved = nbformat.read(notebook_path, as_version=4)

        # Images decode asynchronously: give them a moment before looking.
        def outputs_settled():
            o = driver.execute_script(OUTPUTS_JS)
            return o if all(i["complete"] for i in o["images"]) else None

        outputs = wait_for(outputs_settled, 10, "output images to load", describe)
        driver.execute_script(  # show the first figure with the code that drew it
            "const el = document.querySelector('.jp-NotebookPanel .jp-OutputArea-output img');"
            "if (el) el.closest('.jp-Cell').scrollIntoView({block: 'start'});"
        )
        time.sleep(0.5)
        driver.save_screenshot(str(screenshot))
        return LabRun(outputs["stderr"], outputs["images"], saved, screenshot)
    except BaseException:
        if driver is not None:  # keep what the browser showed when it went wrong
            try:
                driver.save_screenshot(str(failure_screenshot))
            except WebDriverException:
                pass
        raise
    finally:
        try:
            if driver is not None:
                driver.quit()  # ends chromedriver and the browser it started
        finally:
            server.stop()


def test_run_all_cells_executes_every_code_cell(lab_run):
    not_run = [
        i
        for i, cell in enumerate(lab_run.saved.cells)
        if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None
    ]
    assert not not_run, f"code cells (by index) with no execution count after Run All: {not_run}"


def test_run_all_cells_shows_no_error_output(lab_run):
    errors_in_page = [t for t in lab_run.stderr_texts if ERROR_TEXT.search(t)]
    errors_in_file = [
        f"{o.get('ename')}: {o.get('evalue')}"
        for cell in lab_run.saved.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "error"
    ]
    assert not (errors_in_file or errors_in_page), (
        f"error outputs after Run All: {errors_in_file}; error text shown in the page: "
        f"{errors_in_page}; see {lab_run.screenshot.relative_to(REPO_ROOT)}"
    )


def test_run_all_cells_renders_a_figure(lab_run):
    rendered = [i for i in lab_run.images if i["width"] > 0 and i["height"] > 0]
    assert rendered, (
        f"no figure rendered in an output area (images found: {lab_run.images}); "
        f"see {lab_run.screenshot.relative_to(REPO_ROOT)}"
    )
