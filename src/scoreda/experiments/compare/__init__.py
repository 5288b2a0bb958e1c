r"""The comparison harness: tune every method per case on hidden trials, evaluate on many.

A comparison in this package is *fair* and *powered*:

* **common random numbers**: in a trial every method sees the same truth, the same
  observations, the same standard-normal draws of its initial ensemble (scaled by its own
  ``init_std``) and the same cycle key;
* **tuned per case**: each method is tuned on *tuning trials* whose seeds are disjoint from
  the *evaluation trials*, over the product of its grid; the grid and every point's score
  are part of the result;
* **powered**: on the evaluation trials each method's time-averaged RMSE (mean with a
  bootstrap interval), its spread/RMSE, CRPS and rank histogram, its diverged trials and the
  trials where it lost track (RMSE above the case's ``climate_std``), all counted, never
  dropped; the difference to a reference method is the Hodges–Lehmann estimate of the *paired*
  difference over every trial with its Wilcoxon signed-rank 95% interval and p-value, a
  diverged trial counting as a loss (:mod:`scoreda.experiments.statistics`: rank statistics,
  which heavy-tailed RMSEs need); :func:`~scoreda.experiments.statistics.holm` corrects a
  chapter's verdicts together; where a difference to the reference is a *close call* (its
  interval nearer 0 than its half-width), every method runs on the ``close_call_seeds`` of
  :func:`compare` too, and the comparison holds both sets of trials;
* **tuned to an interior optimum**: a grid point's score is the mean RMSE over the tuning
  trials with a diverged trial counted as the worst (so one divergence does not erase a
  point), and
  a numeric axis whose chosen value sits at an edge of its grid is widened along the line
  through the chosen point, one value beyond the edge per round, for up to ``Method.widen``
  rounds (the final grid and every point scored are the tuning's); an edge with no
  admissible value beyond it (inflation 1, an additive knob at 0) is a *bound* of the knob's
  range, marked ⊥, and one the last round left is marked †; scores within
  ``Method.tie_rtol`` (1%) of the lowest are tied, and a tie goes to fewer divergences, the
  given grid and the interior (:func:`choose`), so float noise does not pick an edge where
  an interior point ties, and a widened value is taken only if it beats the grid.

Trials run side by side in one compiled, vmapped scan
(:func:`scoreda.assimilate.cycle_batch`), and so do the float-valued points of a grid (the
knobs enter as traced arrays); string- and integer-valued knobs (integrator, number of
pseudo-time steps) select code and are looped over.

A :class:`Case` says how to make trial ``seed`` (:class:`Trial`) and what the forecast
model is; a :class:`Method` names a filter of :data:`scoreda.filters.FILTERS` with fixed
knobs and a grid. :func:`compare` runs both stages for a list of methods and returns a
:class:`Comparison`, whose :meth:`Comparison.table` is a Markdown table and
:meth:`Comparison.verdict` a sentence computed from the numbers. Results are cached as JSON
under ``$SCOREDA_CACHE/compare/``, one file per method and stage, so an interrupted
comparison resumes. The key is what the run computes: the case's label and a digest of its
trial maker, model, operator and arrays (:meth:`Case.identity`), the method's description and
a digest of its filter and ``wrap`` (:meth:`Method.identity`), the seeds, and a digest of the
package's code; a case or method that cannot be digested is refused for caching, and a
stored tuning that does not fit its method's grid is named and tuned again.

Everything is checked when built: seeds are distinct integers, every knob value (fixed or
on a grid) passes its filter's own check, a knob is fixed or tuned but not both.

The harness is one package in five rooms, each one idea: ``compare.model`` (what a
comparison is made of), ``compare.tuning`` (the tuning rule), ``compare.runner`` (running
the stages), ``compare.store`` (the cache) and ``compare.report`` (tables and verdicts);
every public name is importable from here.
"""

from __future__ import annotations

from scoreda.experiments.compare.model import Case, Method, MethodResult, Trial, Tuning, grid_points
from scoreda.experiments.compare.report import Comparison, edge_counts, markdown_table, tally
from scoreda.experiments.compare.runner import compare, evaluate, make_trials, trajectory, tune
from scoreda.experiments.compare.tuning import (at_bound_of, check_tuning, choose, search,
                                                step_beyond, tied, tuning_scores)
from scoreda.experiments.statistics import (
    OUTCOMES,
    Difference,
    Family,
    holm,
    interval_outcome,
    mean_interval,
    paired_difference,
)

__all__ = ["Trial", "Case", "Method", "Tuning", "MethodResult", "Difference", "Family",
           "Comparison", "paired_difference", "mean_interval", "holm", "trajectory",
           "make_trials", "grid_points", "tuning_scores", "tied", "choose", "search", "tune",
           "evaluate", "compare", "check_tuning", "markdown_table", "tally", "OUTCOMES",
           "interval_outcome", "step_beyond", "at_bound_of", "edge_counts"]
