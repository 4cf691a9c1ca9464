"""Showing a library function's code in a notebook, as the notebook's reader sees it."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

__all__ = ["show_source"]


def show_source(fn: Callable, *, docstring: bool = True, start: str | None = None, stop: str | None = None) -> None:
    """Print the source of `fn`: whole, without its docstring, or from `start` up to `stop`.

    The printed code is the library as installed, so a notebook cell that calls this is
    marked ``# NBVAL_IGNORE_OUTPUT``: reformatting the library must not fail the notebook.

    Args:
      fn: a function or class.
      docstring: False leaves the docstring out.
      start, stop: print from the line holding `start` to the line before the one holding `stop`.

    Raises:
      ValueError: `start` or `stop` does not occur in the source (the message says which).
    """
    text = inspect.getsource(fn)
    if not docstring:
        text = re.sub(r'\n(\s*)"""(?:.|\n)*?"""\n', "\n", text, count=1)
    for marker, keep_after in ((start, True), (stop, False)):
        if marker is None:
            continue
        at = text.find(marker)
        if at < 0:
            raise ValueError(f"{marker!r} does not occur in the source of {fn.__qualname__}; pass a line it holds.")
        line = text.rfind("\n", 0, at) + 1
        text = text[line:] if keep_after else text[:line]
    print(text.rstrip())
