"""Checks of the numbers a notebook's prose states: the portable half of its regression test.

A number that comes out of training, sampling or a long float32 reduction differs in its
last digits from one CPU to the next (another vector width, another thread count), and
training amplifies that. So a notebook shows such a number in a cell whose output the
tests do not compare (``# NBVAL_IGNORE_OUTPUT``), and right after it checks every number
its text states with one of these functions. Their printed verdict does not depend on the
machine, so strict nbval compares it; when a claim no longer holds, the cell raises
``ClaimError`` naming the claim, the measured value and the stated one.

The tolerance of each claim is measured, not guessed: the spread of the number over other
instruction sets (``XLA_FLAGS=--xla_cpu_max_isa=...``), one core (``taskset -c 0``) and other
BLAS core types, with a margin. ``benchmarks/claim_spread.py`` measures that spread: it runs
the notebooks under those settings with ``VAE_LIB_CLAIMS_LOG`` set to a file, to which every
check appends one JSON line (the claim, the computed value, the stated value, the tolerance),
and prints each claim's range against its tolerance. ``make test-portable`` then runs strict
nbval under changed settings.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ClaimError", "expect", "expect_between", "expect_true"]


class ClaimError(AssertionError):
    """A number or fact that a notebook's text states does not hold for the computed value."""


def _number(what: str, value: ArrayLike) -> float:
    a = np.asarray(value, dtype=np.float64)
    if a.size != 1:
        raise ValueError(
            f"{what}: a claim checks one number, got an array of shape {a.shape}; "
            f"reduce it first (for example .mean() or [i])."
        )
    v = float(a.reshape(()))
    if not math.isfinite(v):
        raise ClaimError(f"{what}: the computed value is {v}, not a finite number.")
    return v


def _fmt(x: float) -> str:
    return f"{x:g}"


def _log(kind: str, what: str, value: float, **stated) -> None:
    """Append the computed value to the file named by VAE_LIB_CLAIMS_LOG, if it is set."""
    path = os.environ.get("VAE_LIB_CLAIMS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"kind": kind, "what": what, "value": value, **stated}) + "\n")


def expect(what: str, value: ArrayLike, stated: float, tol: float) -> None:
    """Check that a computed number is the one the text states, within a measured tolerance.

    Prints ``"<what>: <stated> ± <tol> as stated"``, which is the same on every machine.

    Args:
      what: the claim's name as the reader sees it, with its unit (e.g. "test -ELBO (nats)").
      value: the computed number (a Python or NumPy scalar or a one-element array).
      stated: the number written in the notebook's text.
      tol: the largest distance from ``stated`` that still counts as the same claim; set it
        from the spread measured across machines, with a margin.

    Returns nothing, so that a check as the last line of a cell displays only its verdict.

    Raises:
      ClaimError: the value is not finite, or is farther than ``tol`` from ``stated``; the
        message names the claim and both numbers.
      ValueError: ``tol`` is negative or ``value`` has more than one element.
    """
    if not tol >= 0:
        raise ValueError(f"{what}: the tolerance must be >= 0, got {tol}.")
    v = _number(what, value)
    _log("expect", what, v, stated=stated, tol=tol)
    if abs(v - stated) > tol:
        raise ClaimError(
            f"{what}: computed {v:.6g}, but the text states {_fmt(stated)} ± {_fmt(tol)} "
            f"(off by {v - stated:+.3g}). Fix the code, or re-measure and update the text "
            f"and this check together."
        )
    print(f"{what}: {_fmt(stated)} ± {_fmt(tol)} as stated")


def expect_between(what: str, value: ArrayLike, low: float, high: float) -> None:
    """Check that a computed number lies in the closed range ``[low, high]`` the text claims.

    For claims worded as a range ("about twenty nats", "less than a nat"). Prints
    ``"<what>: between <low> and <high> as stated"``.

    Raises:
      ClaimError: the value is not finite or lies outside the range.
      ValueError: ``low > high`` or ``value`` has more than one element.
    """
    if not low <= high:
        raise ValueError(f"{what}: the range is empty (low {low} > high {high}).")
    v = _number(what, value)
    _log("between", what, v, low=low, high=high)
    if not low <= v <= high:
        raise ClaimError(
            f"{what}: computed {v:.6g}, but the text states it lies between "
            f"{_fmt(low)} and {_fmt(high)}. Fix the code, or re-measure and update the "
            f"text and this check together."
        )
    print(f"{what}: between {_fmt(low)} and {_fmt(high)} as stated")


def expect_true(what: str, holds: bool) -> None:
    """Check a yes/no claim of the text (an ordering, a sign, "all of them").

    Prints ``"<what>: holds"``.

    Raises:
      ClaimError: the claim does not hold.
    """
    _log("true", what, float(bool(np.all(holds))))
    if not bool(np.all(holds)):
        raise ClaimError(f"{what}: the text says so, but it does not hold for the computed values.")
    print(f"{what}: holds")
