"""The pinned environment: pyproject, environment.yml (conda users), the lock and binder/requirements.txt
agree, and Binder's lean environment, built the way Binder builds it from binder/, imports vae_lib and reads
the data offline. Building it writes into build/binder (make) or a temporary folder, never the repository."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from helpers import load_script

REPO = Path(__file__).resolve().parents[1]
BINDER = load_script("tools/binder.py")


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


def binder_pins() -> dict:
    return _pins((REPO / "binder" / "requirements.txt").read_text().splitlines())


def test_binder_requirements_pin_exactly_what_pyproject_pins():
    pyproject = pyproject_pins()
    for name, version in binder_pins().items():
        assert pyproject.get(name) == version, (
            f"{name}: binder/requirements.txt {version}, pyproject {pyproject.get(name)}"
        )


def test_binder_environment_is_lean_and_has_what_the_notebooks_import():
    names = set(binder_pins())
    # vae_lib's own dependencies, what the notebooks import besides, and JupyterLab to run them in
    runtime = {_name(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    wanted = runtime | {"scipy", "ipywidgets", "jupyterlab", "ipykernel", "jupyterlab-rise"}
    assert wanted <= names, f"binder/requirements.txt lacks {sorted(wanted - names)}"
    heavy = {"tensorflow", "tensorflow-cpu", "tensorflow-datasets", "pytest", "nbval", "selenium", "ruff", "sphinx"}
    assert not names & heavy, f"binder/requirements.txt should stay lean: {sorted(names & heavy)}"


def test_binder_files_install_the_package_and_name_the_offline_data():
    binder = REPO / "binder"
    assert "dataset-fashion-mnist" in (binder / "apt.txt").read_text().split()
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    post = (binder / "postBuild").read_text()
    lines = [line.strip() for line in post.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "set -e"
    assert any(line.startswith("python -m pip install") and "--no-deps" in line for line in lines)
    assert os.access(binder / "postBuild", os.X_OK)
    # repo2docker reads binder/ and then ignores the top level: a file left there would only mislead.
    for name in ("apt.txt", "postBuild", "requirements.txt", "runtime.txt"):
        assert not (REPO / name).exists(), f"{name} at the top level is ignored by Binder once binder/ exists"


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory) -> Path:
    """Binder's lean environment: the one `make test` built (VAE_BINDER_DIR) if it is current, else a fresh one."""
    given = os.environ.get("VAE_BINDER_DIR")
    if given and BINDER.is_current(Path(given).resolve()):
        return Path(given).resolve()
    tmp = tmp_path_factory.mktemp("binder")
    if not BINDER.index_reachable():
        pytest.skip("the Python package index is not reachable from here: cannot build a fresh environment")
    base = tmp / "env"
    subprocess.run([sys.executable, str(REPO / "tools" / "binder.py"), "--dir", str(base), "build"], check=True)
    return base


@pytest.mark.slow
def test_fresh_environment_built_like_binder_imports_vae_lib_and_reads_the_data_offline(binder_env, tmp_path):
    """The environment of binder/ (requirements.txt, then postBuild in a copy of the repository) as Binder runs it."""
    py = str(binder_env / "venv" / "bin" / "python")
    pins = binder_pins()
    probe = (
        "import importlib.metadata as m, importlib.util as u, json, vae_lib, vae_lib.models, vae_lib.training;"
        "from vae_lib.data import load_fashion_mnist as f;"
        "x, y = f('test'); print(x.shape, y[:3].tolist(), vae_lib.__file__);"
        f"print(json.dumps({{n: m.version(n) for n in {sorted(pins)!r}}}));"
        "heavy = ('tensorflow', 'tensorflow_datasets', 'pytest', 'sphinx');"
        "print(json.dumps(sorted(n for n in heavy if u.find_spec(n))))"
    )
    net, why = BINDER.network_prefix()  # offline, where this machine can cut the network
    out = subprocess.run(
        [*net, py, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=BINDER.clean_env(binder_env),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first, versions, heavy = out.stdout.strip().splitlines()[-3:]
    assert "(10000, 28, 28) [9, 2, 1]" in first
    assert str(binder_env / "repo" / "vae_lib") in first, f"vae_lib is not the copy postBuild installed: {first}"
    assert {_name(k): v for k, v in json.loads(versions).items()} == pins
    assert json.loads(heavy) == [], f"the lean environment has {heavy}"
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True, env=BINDER.clean_env(binder_env))
    assert check.returncode == 0, check.stdout + check.stderr
