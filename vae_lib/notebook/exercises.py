"""Check functions for the notebooks' exercises: they say right or wrong, and give hints.

A check never raises on a wrong answer (a notebook must keep running); it prints a
verdict and returns True or False, so a test can assert on it. It never prints the
expected value: a wrong answer gets a direction (too high, too low, which entries) and the
exercise's hint, and a right one is confirmed without repeating the number, so that stored
outputs under an exercise give nothing away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["check_function", "check_value"]


def _where_off(a: np.ndarray, e: np.ndarray, rtol: float, atol: float) -> str:
    """Which way the answer is off, without saying by how much."""
    if a.size == 1:
        return "too high" if float(a) > float(e) else "too low"
    bad = ~np.isclose(a, e, rtol=rtol, atol=atol)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{int(bad.sum())} of {a.size} entries are off, the first at index {first}"


def check_value(
    answer: ArrayLike | None,
    expected: ArrayLike,
    what: str,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    hint: str = "",
) -> bool:
    """Compare a student's number or array with the expected one and print the verdict.

    Args:
        answer: the student's value (None or ``...``: not answered yet).
        expected: the reference value; it is never printed.
        what: the name of the quantity, used in the message.
        rtol, atol: the tolerance of ``np.allclose``.
        hint: printed after a wrong answer.

    Returns:
        True when the answer matches.
    """
    if answer is None or answer is ...:
        print(f"Not answered yet: fill in {what}.")
        return False
    a, e = np.asarray(answer, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        print(f"Not yet: {what} should have shape {e.shape}, yours has shape {a.shape}.")
        return False
    if not np.all(np.isfinite(a)):
        print(f"Not yet: {what} contains NaN or infinity. {hint}".rstrip())
        return False
    if np.allclose(a, e, rtol=rtol, atol=atol):
        print(f"Correct: {what}.")
        return True
    print(f"Not yet: {what} is {_where_off(a, e, rtol, atol)}. {hint}".rstrip())
    return False


def check_function(
    fn: Callable,
    reference: Callable,
    cases: Sequence[tuple],
    what: str,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    hint: str = "",
) -> bool:
    """Call a student's ``fn`` and the ``reference`` on each tuple of arguments and compare.

    Returns:
        True when ``fn`` agrees with ``reference`` on every case (the reference's values
        are never printed).
    """
    for i, args in enumerate(cases):
        try:
            got = fn(*args)
        except NotImplementedError:
            print(f"Not answered yet: {what} still raises NotImplementedError.")
            return False
        except Exception as e:  # noqa: BLE001 - report any failure to the student
            print(f"Not yet: {what} raised {type(e).__name__}: {e}")
            return False
        want = reference(*args)
        got_a, want_a = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got_a.shape != want_a.shape:
            print(
                f"Not yet: on test case {i + 1}, {what} returned shape {got_a.shape}; "
                f"expected {want_a.shape}. {hint}".rstrip()
            )
            return False
        if not np.allclose(got_a, want_a, rtol=rtol, atol=atol):
            print(f"Not yet: on test case {i + 1}, {what} is {_where_off(got_a, want_a, rtol, atol)}. {hint}".rstrip())
            return False
    print(f"Correct: {what} matches the reference on all {len(cases)} test cases.")
    return True
