"""Check functions for the notebooks' exercises: they say right or wrong, and why.

A check never raises on a wrong answer (a notebook must keep running); it prints a
verdict and returns True or False, so a test can assert on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _fmt(x) -> str:
    a = np.asarray(x)
    return f"{float(a):.5g}" if a.size == 1 else np.array2string(a, precision=4, threshold=6)


def check_value(answer, expected, what: str, rtol: float = 1e-4, atol: float = 1e-6, hint: str = "") -> bool:
    """Compare a student's number or array with the expected one and print the verdict."""
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
        print(f"Correct: {what} = {_fmt(a)}.")
        return True
    print(f"Not yet: {what} is {_fmt(a)}, expected {_fmt(e)}. {hint}".rstrip())
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
    """Call a student's `fn` and the `reference` on each tuple of arguments and compare."""
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
            print(
                f"Not yet: on test case {i + 1}, {what} returned {_fmt(got_a)}; expected "
                f"{_fmt(want_a)}. {hint}".rstrip()
            )
            return False
    print(f"Correct: {what} matches the reference on all {len(cases)} test cases.")
    return True
