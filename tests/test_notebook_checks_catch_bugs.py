"""The notebooks' regression tests have teeth: a realistic bug in vae_lib makes nbval fail.

Most numbers the notebooks print are not compared digit for digit (they move from one CPU to
another); `vae_lib.notebook.claims` checks what the text says about them instead. These tests make
sure that this still catches real mistakes. Each one copies vae_lib and the notebook that
must catch a bug into a temporary folder, plants the bug there (the library in the
repository is untouched), runs strict nbval on that notebook until the first failure
(`-x`), and asserts that it fails in the cell that should notice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes: `make unit` leaves it out

REPO = Path(__file__).resolve().parents[1]

# (name, file, correct code, buggy code, notebook, text of the cell that must fail)
BUGS = [
    (
        "kl_off_by_a_constant_per_latent_dimension",
        "vae_lib/objectives.py",
        "jnp.exp(logvar) + mean**2 - 1.0 - logvar",
        "jnp.exp(logvar) + mean**2 - 0.9 - logvar",
        "02_vae_and_the_elbo.ipynb",
        "kl_exact = objectives.kl_to_standard_normal",
    ),
    (
        "log_prior_dropped_from_the_one_sample_elbo",
        "vae_lib/objectives.py",
        "log_px_given_z + standard_normal_log_density(z) - gaussian_log_density",  # log_importance_weight
        "log_px_given_z - gaussian_log_density",
        "02_vae_and_the_elbo.ipynb",
        "its importance-weighted estimate is higher",  # the first claim after the bug that reads it
    ),
    (
        "pathwise_gradient_scaled_by_1_1",
        "vae_lib/estimators.py",
        "return jax.grad(lambda m, s: f(m + s * eps), argnums=(0, 1))(mean, std)",
        "return jax.tree.map(lambda g: 1.1 * g, jax.grad(lambda m, s: f(m + s * eps), argnums=(0, 1))(mean, std))",
        "03_gradient_estimators.ipynb",
        "pw_mu, pw_sigma = est.pathwise_samples",
    ),
    (
        "autoencoder_loss_averaged_over_pixels",
        "vae_lib/losses.py",
        "loss = -jnp.mean(bernoulli_log_likelihood(x, model(x)))",
        "loss = -jnp.mean(bernoulli_log_likelihood(x, model(x))) / x.shape[-1]",
        "01_autoencoder.ipynb",
        "def reconstruction_loss(x, logits)",
    ),
]


@pytest.mark.parametrize("name, path, correct, buggy, notebook, failing_cell", BUGS, ids=[b[0] for b in BUGS])
def test_nbval_fails_on_the_planted_bug(tmp_path, name, path, correct, buggy, notebook, failing_cell):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "vae_lib", copy / "vae_lib", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / notebook, copy / "notebooks" / notebook)
    shutil.copy(REPO / "tests" / "nbval_sanitize.cfg", copy / "nbval_sanitize.cfg")

    source = (copy / path).read_text()
    assert source.count(correct) == 1, f"{path} changed: update the bug planted by {name}"
    (copy / path).write_text(source.replace(correct, buggy))

    env = dict(os.environ, PYTHONPATH=str(copy), TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            f"notebooks/{notebook}",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            "nbval_sanitize.cfg",
            "--nbval-cell-timeout",
            "300",
        ],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 1 and "1 failed" in report, f"nbval did not catch {name}:\n{report[-3000:]}"
    failed_cell = report.split("Input:", 1)[1][:3000] if "Input:" in report else report
    assert failing_cell in failed_cell, f"{name} failed elsewhere than expected:\n{report[-3000:]}"
