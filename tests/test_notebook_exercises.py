"""vae_lib.notebook.exercises: verdicts that help without giving the answer away."""

import numpy as np

from vae_lib.notebook.exercises import check_function, check_value


def test_a_right_value_is_confirmed_without_printing_it(capsys):
    assert check_value(385.018, 385.0181, "the loss")
    out = capsys.readouterr().out
    assert out.startswith("Correct") and "385" not in out


def test_a_wrong_value_gets_a_direction_and_the_hint_but_not_the_expected_value(capsys):
    assert not check_value(400.0, 385.0181, "the loss", hint="Average over images.")
    out = capsys.readouterr().out
    assert "too high" in out and "Average over images." in out and "385" not in out


def test_a_wrong_array_names_how_many_entries_are_off(capsys):
    assert not check_value(np.array([1.0, 2.0, 5.0]), np.array([1.0, 2.0, 3.0]), "v")
    out = capsys.readouterr().out
    assert "1 of 3 entries are off, the first at index (2,)" in out and "3.0" not in out


def test_an_unanswered_exercise_says_so(capsys):
    assert not check_value(None, 1.0, "x")
    assert "Not answered yet" in capsys.readouterr().out


def test_a_wrong_function_is_caught_on_the_first_differing_case_without_the_reference_value(capsys):
    assert not check_function(lambda x: x * 2.0, lambda x: x * 3.0, [(0.0,), (7.0,)], "f", hint="Triple it.")
    out = capsys.readouterr().out
    assert "test case 2" in out and "too low" in out and "21" not in out and "Triple it." in out


def test_a_function_that_raises_is_reported_not_propagated(capsys):
    def broken(x):
        raise NotImplementedError

    assert not check_function(broken, lambda x: x, [(1.0,)], "f")
    assert "still raises NotImplementedError" in capsys.readouterr().out
