"""Checks for the book's code exercises: the reader writes the step being taught, a check
cell compares it with the package's own implementation (or an exact answer) on a few cases
and says, in one line, whether it is right.

::

    def tendency(x, forcing):
        raise NotImplementedError  # your code: dx/dt of Lorenz-96, shape (d,)

    verdict = exercises.check(tendency, l96.tendency, [(x, 8.0) for x in states])
    # not yet: tendency raises NotImplementedError: write it in the cell above

Every exercise has a worked solution in a folded cell that runs the same check (and prints
``right``), so CI executes the solutions.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np


class Verdict(NamedTuple):
    """The outcome of :func:`check`: ``right`` and the one-line message printed."""

    right: bool
    message: str

    def __str__(self) -> str:
        return self.message


def check(candidate: Callable, reference: Callable, cases: Sequence[tuple], *,
          rtol: float = 1e-5, atol: float = 1e-6, name: str | None = None,
          show: bool = True) -> Verdict:
    """Call ``candidate(*case)`` and ``reference(*case)`` for every case and compare the
    results (arrays, numbers, or tuples of them) to ``|a - b| <= atol + rtol |b|``.

    Returns (and prints, with ``show``) ``right: ...`` when all agree, else ``not yet: ...``
    for an unwritten candidate (``NotImplementedError`` or ``None`` returned) or
    ``wrong: ...`` naming the first case that differs, by how much, or what was raised.
    """
    name = name or getattr(candidate, "__name__", "your function")
    if not cases:
        raise ValueError("check needs at least one case")
    verdict = None
    for k, case in enumerate(cases):
        expected = reference(*case)
        try:
            got = candidate(*case)
        except NotImplementedError:
            verdict = Verdict(False, f"not yet: {name} raises NotImplementedError: write it in "
                                     "the cell above")
            break
        except Exception as error:  # the reader's code: any error is a finding
            verdict = Verdict(False, f"wrong: {name} raised {type(error).__name__}: {error} "
                                     f"(case {k + 1} of {len(cases)})")
            break
        if got is None:
            verdict = Verdict(False, f"not yet: {name} returns None: return the result")
            break
        problem = _difference(got, expected, rtol, atol)
        if problem:
            verdict = Verdict(False, f"wrong: case {k + 1} of {len(cases)}: {problem}")
            break
    if verdict is None:
        verdict = Verdict(True, f"right: {name} agrees with the reference in all {len(cases)} "
                                f"cases (to {rtol:g} relative)")
    if show:
        print(verdict.message)
    return verdict


def _difference(got: Any, expected: Any, rtol: float, atol: float) -> str | None:
    """Why ``got`` is not ``expected`` (None when it is, within the tolerances)."""
    if isinstance(expected, tuple):
        if not isinstance(got, tuple) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)}, got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = _difference(g, e, rtol, atol)
            if problem:
                return f"item {i}: {problem}"
        return None
    got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if not np.all(np.isfinite(got) == np.isfinite(expected)):
        return "NaN or infinity where the reference is finite"
    error = np.abs(got - expected)
    bound = atol + rtol * np.abs(expected)
    if np.any(error > bound):
        worst = int(np.argmax(error - bound))
        return (f"largest difference {float(error.flat[worst]):.3g} (reference value "
                f"{float(expected.flat[worst]):.6g})")
    return None
