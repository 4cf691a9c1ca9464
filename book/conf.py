"""Sphinx configuration of the book (`make book`, tools/build_book.py).

Sphinx with myst-nb reads the notebooks with their stored outputs (nothing is executed) and
sphinx-book-theme lays them out: every part, the theme's scripts, styles and icons included,
comes from a PyPI package, so the build and the pages work offline. MathJax 3 is copied from
the PyPI package django-static-mathjax into _static/mathjax/ by tools/build_book.py after the
build (Sphinx's default would load it from a CDN).

The repository's public address is read from pyproject.toml (`[project.urls] Repository`), the one
place it is set: the launch button (Binder, JupyterLab) and the repository button use it.
book/_static/ adds a style sheet (wide display equations scroll inside the text column) and a
script that makes the sidebar button work (see book/_static/sidebar-toggle.js).
"""

import tomllib
from pathlib import Path

REPOSITORY = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["urls"][
    "Repository"
]

project = "Variational autoencoders, step by step, in JAX"
author = "the vae_lib authors"
copyright = "the vae_lib authors"  # noqa: A001 (Sphinx's name for it)

extensions = ["myst_nb"]
root_doc = "index"  # the landing page for learners, written by tools/build_book.py from book/landing.md

# The notebooks are committed with their outputs: show those, never run anything.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget manager from a CDN (the widget outputs are made static first)
nb_merge_streams = True
# The label of a collapsed code cell; tools/build_book.py gives solutions and figures' code their own.
nb_code_prompt_show = "Show code"
nb_code_prompt_hide = "Hide code"

# $...$ and $$...$$ as the notebooks write them; GitHub-style anchors for the README's links.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the notebooks number their sections under one title

# Local MathJax 3 (relative to _static/): tools/build_book.py puts it there.
mathjax_path = "mathjax/tex-chtml-full.js"

html_theme = "sphinx_book_theme"
html_title = "Variational autoencoders in JAX"
html_show_sourcelink = False
html_last_updated_fmt = None
html_context = {"default_mode": "light"}
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_js_files = ["sidebar-toggle.js"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,  # the .ipynb of each page, a local file
    "use_fullscreen_button": True,
    "navigation_with_keys": True,
    # The rocket button of every notebook page: that notebook in JupyterLab on mybinder.org (binder/ sets it up).
    "repository_url": REPOSITORY,
    "repository_branch": "HEAD",
    "path_to_docs": "",  # the pages' notebooks/NN_name.ipynb are the repository's
    "use_repository_button": True,
    "launch_buttons": {"binderhub_url": "https://mybinder.org", "notebook_interface": "jupyterlab"},
}
