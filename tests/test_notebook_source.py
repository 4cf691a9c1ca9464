"""vae_lib.notebook.source: show_source prints a function's code, whole or in part."""

import pytest

from vae_lib.notebook.source import show_source


def sample_function(x):
    """Add one, then double.

    A second docstring line.
    """
    y = x + 1
    z = y * 2
    return z


def test_show_source_prints_the_whole_function_with_its_docstring(capsys):
    show_source(sample_function)
    out = capsys.readouterr().out
    assert out.startswith("def sample_function(x):\n") and out.endswith("    return z\n")
    assert '"""Add one, then double.' in out and "A second docstring line." in out


def test_show_source_without_the_docstring_keeps_every_line_of_code(capsys):
    show_source(sample_function, docstring=False)
    out = capsys.readouterr().out
    assert out == "def sample_function(x):\n    y = x + 1\n    z = y * 2\n    return z\n"


def test_show_source_prints_from_the_line_holding_start_up_to_the_line_before_stop(capsys):
    show_source(sample_function, start="y = x", stop="return")
    assert capsys.readouterr().out == "    y = x + 1\n    z = y * 2\n"


def test_show_source_with_only_start_prints_to_the_end(capsys):
    show_source(sample_function, start="z = y")
    assert capsys.readouterr().out == "    z = y * 2\n    return z\n"


def test_show_source_refuses_a_marker_that_is_not_in_the_source_naming_it(capsys):
    with pytest.raises(ValueError, match=r"'import jax' does not occur in the source of sample_function"):
        show_source(sample_function, stop="import jax")
    assert capsys.readouterr().out == ""
