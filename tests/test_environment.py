"""The pinned environment: pyproject, environment.yml (Binder) and the lock agree, and a
fresh environment built the way Binder builds it imports vae_lib and reads the data."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(reqs) -> dict:
    out = {}
    for r in reqs:
        r = r.split("#")[0].strip()
        if r and not r.startswith("vae_lib"):
            assert "==" in r, f"{r!r} is not pinned exactly (name==version)"
            out[_name(r)] = r.split("==", 1)[1].strip()
    return out


def pyproject_pins() -> dict:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for group, pins in project["optional-dependencies"].items():
        if group != "all":  # `all` names the others
            reqs += pins
    return _pins(reqs)


def environment_pip_list() -> list[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip, "environment.yml has no pip: section"
    return pip[0]


def test_environment_yml_pins_exactly_what_pyproject_pins():
    assert _pins(environment_pip_list()) == pyproject_pins()


def test_environment_yml_uses_python_3_11_from_conda_forge():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    assert "python=3.11" in env["dependencies"]


def test_lock_file_agrees_with_every_pin():
    lock = _pins(
        line
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for name, version in pyproject_pins().items():
        assert lock.get(name) == version, f"{name}: pyproject {version}, lock {lock.get(name)}"


def test_binder_files_install_the_package_and_name_the_offline_data():
    assert "dataset-fashion-mnist" in (REPO / "apt.txt").read_text().split()
    post = (REPO / "postBuild").read_text()
    assert "pip install" in post and "vae_lib.fetch" in post
    assert os.access(REPO / "postBuild", os.X_OK)


def _index_reachable() -> bool:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(REPO / "artifacts" / "pip-probe"),
            "tqdm==4.70.1",
        ],
        capture_output=True,
        timeout=120,
    )
    return out.returncode == 0


@pytest.mark.slow
def test_fresh_environment_built_like_binder_imports_vae_lib(tmp_path):
    """Build a venv from environment.yml's pip list, then `pip install -e .` as postBuild does."""
    if not _index_reachable():
        pytest.skip("the Python package index is not reachable from here: cannot build a fresh environment")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    reqs = tmp_path / "binder-requirements.txt"
    reqs.write_text("\n".join(environment_pip_list()) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", str(reqs)], check=True, timeout=1200)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)], check=True, timeout=300)
    probe = (
        "import vae_lib, vae_lib.models, vae_lib.training, vae_lib.objectives;"
        "from vae_lib.data import load_fashion_mnist as f;"
        "x, y = f('test'); print(x.shape, y[:3].tolist(), vae_lib.__file__)"
    )
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(10000, 28, 28) [9, 2, 1]" in out.stdout
    assert str(REPO / "vae_lib") in out.stdout
