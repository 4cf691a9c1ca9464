"""Sphinx configuration of the book (`make book`, tools/build_book.py).

Sphinx with myst-nb reads the notebooks with their stored outputs (nothing is executed) and
sphinx-book-theme lays them out: every part, the theme's scripts, styles and icons included,
comes from a PyPI package, so the build and the pages work offline. MathJax 3 is copied from
the PyPI package django-static-mathjax into _static/mathjax/ by tools/build_book.py after the
build (Sphinx's default would load it from a CDN).
"""

project = "Variational autoencoders, step by step, in JAX"
author = "the vae_lib authors"
copyright = "the vae_lib authors"  # noqa: A001 (Sphinx's name for it)

extensions = ["myst_nb"]
root_doc = "index"  # README.md, copied to index.md by tools/build_book.py

# The notebooks are committed with their outputs: show those, never run anything.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget manager from a CDN (the widget outputs are made static first)
nb_merge_streams = True

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
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,  # the .ipynb of each page, a local file
    "use_fullscreen_button": True,
    "navigation_with_keys": True,
}
