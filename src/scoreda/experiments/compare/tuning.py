"""The tuning rule of the harness, once: a grid point's score (:func:`tuning_scores`, a
diverged trial counted as a loss), ties within ``Method.tie_rtol`` and how they are broken
(:func:`tied`, :func:`choose`), widening along the line through an edge choice
(:func:`search`, :func:`step_beyond`; an edge with no admissible value beyond it is a bound
of the knob's range, :func:`at_bound_of`), and :func:`check_tuning`, which refuses a stored
tuning that this rule could not have made."""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from scoreda import _checks
from scoreda.experiments.compare.model import Method, Tuning, _canonical, grid_points
from scoreda.filters import registry


def tuning_scores(rmse: np.ndarray, climate_std: float | None = None) -> np.ndarray:
    r"""Each grid point's score from its per-trial time-averaged RMSEs ``rmse`` ``(P, n)``
    (NaN: diverged): the mean over the trials, a diverged trial counted at the *loss value*
    :math:`\max(\text{climate\_std}, \text{the largest RMSE of any trial that ran})`, so it
    scores worse than every trial that ran (and than climatology) without making the whole
    point ``inf``. ``inf`` where no trial of any point ran and the climate is unknown, and
    for a point with a diverged trial when every trial that ran scored exactly 0 (no finite
    loss is then worse than them)."""
    rmse = np.asarray(rmse, float)
    ran = np.isfinite(rmse)
    largest = float(np.max(rmse[ran])) if ran.any() else 0.0
    loss = max(largest, climate_std or 0.0)
    if loss == 0.0:
        loss = np.inf
    return np.where(ran, rmse, loss).mean(axis=1)


#: how often a refused step beyond an edge is halved towards the edge before the axis counts
#: as ending at a bound of its knob's range (eps_b 0.8 with 0.5 beside it: 1.28 and 1.04 are
#: refused, 0.92 is scored)
HALVINGS = 4


def step_beyond(method: Method, grid: Mapping, chosen: Mapping, name: str) -> float | None:
    """The value one step beyond the edge of axis ``name`` of ``grid`` where ``chosen[name]``
    sits, along the line through the chosen point (see ``Method.widen``): the edge's ratio
    to its neighbour when both are positive and at least 1.5 apart, else their difference.
    A step the filter's checks refuse or warn about (eps_b at or above 1, deflation below
    inflation 1) is halved towards the edge up to ``HALVINGS`` (4) times. None when the
    choice is interior, the axis is not a float axis of two or more values, or no admissible
    value lies beyond the edge: the edge is a *bound* of the knob's range (an additive knob
    at 0, inflation 1), which no wider grid can move."""
    if name not in grid or name not in chosen:
        raise ValueError(f"{name!r} must be an axis of the grid {sorted(grid)} and a knob of "
                         f"the chosen point {sorted(chosen)}")
    values = grid[name]
    if len(values) < 2 or not all(isinstance(v, float) for v in values):
        return None
    ordered = sorted(values)
    if chosen[name] == ordered[-1]:
        inner, edge = ordered[-2], ordered[-1]
    elif chosen[name] == ordered[0]:
        inner, edge = ordered[1], ordered[0]
    else:
        return None
    if edge == 0.0:  # an additive knob's floor: the sign of its steps is not the grid's
        return None
    if inner > 0 and edge > 0 and max(inner, edge) / min(inner, edge) >= 1.5:
        value = edge * (edge / inner)
    else:
        value = edge + (edge - inner)
    for _ in range(HALVINGS + 1):
        value = float(f"{value:.6g}")
        if _admissible(method, chosen, name, value, edge, values):
            return value
        value = edge + (value - edge) / 2
    return None


def _admissible(method: Method, chosen: Mapping, name: str, value: float, edge: float,
                values) -> bool:
    """Whether ``value`` may be scored beyond ``edge`` on axis ``name``: new, on the edge's
    side of zero, no deflation, and passing the filter's checks without a warning."""
    if value in values or (value > 0) != (edge > 0):
        return False
    if name == "inflation" and value < 1.0 <= edge:  # no widening into deflation
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            registry.get(method.filter).check_knobs(dict(method.knobs) | dict(chosen)
                                                    | {name: value})
            if name in registry.CYCLE_KNOBS:
                _checks.non_negative(name, value)
    except (ValueError, TypeError, Warning):
        return False
    return True


def _widened(method: Method, grid: dict, chosen: Mapping) -> dict:
    """The axes of ``grid`` (name -> values) whose chosen value sits at an edge, each with the
    value one step beyond it (:func:`step_beyond`); empty when none can be widened."""
    beyond = {name: step_beyond(method, grid, chosen, name) for name in grid}
    return {name: value for name, value in beyond.items() if value is not None}


def search(method: Method, score: Callable, climate_std: float | None = None) -> Tuning:
    """The tuning rule of :func:`tune`, for any scorer: ``score(points)`` yields, for each
    point (a dict of knobs), its per-trial time-averaged RMSEs ``(n,)`` (NaN: diverged) and
    its mean survival (steps before divergence). Scores (:func:`tuning_scores`), chooses
    among the points tied with the lowest score (:func:`choose`) and, while the choice sits
    at an edge of a
    numeric axis, scores the point one step beyond that edge along the line through the
    choice, for up to ``method.widen`` rounds."""
    grid = method.tuning_grid()
    if not grid:
        return Tuning([], np.zeros(0), dict(method.knobs), np.zeros(0, int), {})
    scored: dict = {}  # canonical point -> (time-averaged RMSEs (n,), mean survival)
    points, new = [], grid_points(method, grid)
    for round_ in range(method.widen + 1):
        points += new
        for point, (rmse, survival) in zip(new, score(new) if new else ()):
            scored[_canonical(point)] = (np.asarray(rmse, float), float(survival))
        rows = [scored[_canonical(p)] for p in points]
        rmse = np.stack([r[0] for r in rows])
        scores = tuning_scores(rmse, climate_std)
        diverged = np.sum(~np.isfinite(rmse), axis=1)
        if np.isfinite(rmse).any():
            best = choose(method, points, scores, diverged, grid)
        else:  # every trial of every point diverged: keep the one that survived longest
            best = int(np.argmax([r[1] for r in rows]))
        chosen = points[best]
        if round_ == method.widen or not np.isfinite(rmse).any():
            break
        # widen along the lines through the chosen point: one new point per edge axis
        beyond = _widened(method, grid, chosen)
        new = [dict(chosen) | {name: value} for name, value in beyond.items()]
        new = [p for p in new if _canonical(p) not in scored]
        if not new:
            break
        for name, value in beyond.items():
            grid = grid | {name: ((value,) + grid[name] if value < min(grid[name])
                                  else grid[name] + (value,))}
    # keep only the tuned names in the points (the fixed knobs are the method's)
    return Tuning([{k: p[k] for k in grid} for p in points], scores, chosen, diverged, grid)


def tied(method: Method, scores) -> np.ndarray:
    """Which ``scores`` ``(P,)`` are tied with the lowest finite one: within
    ``method.tie_rtol`` of it (relative; scores are mean RMSEs, so not negative)."""
    scores = np.asarray(scores, float)
    ok = np.isfinite(scores)
    if not ok.any():
        return np.zeros(scores.shape, bool)
    lowest = float(np.min(scores[ok]))
    return ok & (scores <= lowest + method.tie_rtol * abs(lowest))


def choose(method: Method, points: Sequence[Mapping], scores, diverged, grid: Mapping) -> int:
    r"""The index of the chosen point among ``points`` with tuning ``scores`` ``(P,)`` and
    ``diverged`` tuning trials ``(P,)``, on the (possibly widened) ``grid``: among the points
    :func:`tied` with the lowest score, the first by

    1. fewest diverged tuning trials;
    2. fewest knobs outside the method's given grid (a widened value must *beat* the grid,
       not tie it, so widening stops where the scores flatten);
    3. fewest knobs at an edge of ``grid`` (a numeric axis with two or more values);
    4. lowest score, then the earlier point.

    With ``method.tie_rtol`` 0 only exact ties remain, broken as above."""
    scores = np.asarray(scores, float)
    given = method.tuning_grid()
    candidates = np.flatnonzero(tied(method, scores))
    if candidates.size == 0:  # no finite score: every point is ranked, divergences first
        candidates = np.arange(scores.size)

    def rank(i):
        point = points[i]
        widened = sum(point[k] not in given.get(k, (point[k],)) for k in grid)
        at_edge = sum(at_edge_of(grid, k, point[k]) for k in grid)
        return (int(diverged[i]), widened, at_edge, float(scores[i]), int(i))

    return int(min(candidates, key=rank))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_edge_of(grid: Mapping, name: str, value) -> bool:
    """Whether ``value`` is the smallest or largest of ``grid[name]``, a numeric axis of two or
    more values (a string axis, or one holding None, has no edge): what :func:`choose` avoids
    in a tie and what a table marks †."""
    values = grid[name]
    return (len(values) > 1 and all(_is_number(v) for v in values)
            and value in (min(values), max(values)))


def at_bound_of(method: Method, grid: Mapping, chosen: Mapping, name: str) -> bool:
    """Whether ``chosen[name]`` sits at an edge of ``grid[name]`` that is a bound of the knob's
    range (:func:`step_beyond` finds no admissible value beyond it): a table marks it ⊥, not
    †, since no wider grid could move the choice."""
    return (at_edge_of(grid, name, chosen[name])
            and all(isinstance(v, float) for v in grid[name])
            and step_beyond(method, grid, chosen, name) is None)


def check_tuning(method: Method, tuning: Tuning) -> None:
    """Raise ``ValueError`` unless ``tuning`` fits ``method``: its grid holds the method's grid
    with at most ``method.widen`` values added per axis, its points are the method's product
    grid followed by at most ``widen`` widened points per axis (values of that grid, none
    repeated), its chosen knobs are the fixed knobs with one of those points, and that point
    is :func:`tied` with the lowest score."""
    given = method.tuning_grid()
    grid = given if tuning.grid is None else dict(tuning.grid)
    if set(grid) == set(given):  # the method's order of the knobs (a JSON file may sort them)
        grid = {k: tuple(grid[k]) for k in given}
    if set(grid) != set(given) or any(
            not set(given[k]) <= set(grid[k]) or len(grid[k]) - len(given[k]) > method.widen
            for k in given):
        raise ValueError(f"its grid {grid} is not {method.label}'s grid {given} widened by at "
                         f"most {method.widen} values per knob")
    product = [{k: p[k] for k in given} for p in grid_points(method, given)] if given else []
    stored = [_canonical(p) for p in tuning.points]
    extra = len(stored) - len(product)
    if (stored[:len(product)] != [_canonical(p) for p in product] or len(set(stored)) != len(stored)
            or extra > method.widen * len(given)
            or any(set(p) != set(grid) or any(p[k] not in grid[k] for k in grid)
                   for p in tuning.points)):
        raise ValueError(f"its points {tuning.points} are not the grid of {method.label} "
                         f"followed by at most {method.widen * len(given)} widened points")
    expected = [dict(p) for p in tuning.points]
    candidates = [_canonical(dict(method.knobs) | p) for p in expected] or [_canonical(dict(method.knobs))]
    chosen = _canonical(tuning.chosen)
    if chosen not in candidates:
        raise ValueError(f"its chosen knobs {tuning.chosen} are not a point of {method.label}'s "
                         "grid with its fixed knobs")
    scores = np.asarray(tuning.scores, float)
    if scores.size and np.isfinite(scores).any() and \
            not tied(method, scores)[candidates.index(chosen)]:
        raise ValueError(f"its chosen knobs {tuning.chosen} do not have the lowest score "
                         f"(within {method.tie_rtol:.3g} of it, relative)")
