"""A finished comparison (:class:`Comparison`): its Markdown tables (results, tuning grids),
paired differences and verdicts computed from the numbers, and its record as JSON."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from scoreda.experiments.compare.model import Method, MethodResult, Tuning, _short
from scoreda.experiments.compare.store import result_json, tuning_json
from scoreda.experiments.compare.tuning import (_is_number, at_bound_of, at_edge_of, tied,
                                                tuning_scores)
from scoreda.experiments.statistics import OUTCOMES, Difference, mean_interval, paired_difference


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table: ``header`` (n names) and ``rows`` (each a sequence of n cells, shown
    with ``str``; a ``|`` in a cell is escaped, a line break becomes a space)."""
    if isinstance(header, (str, bytes)):
        raise ValueError(f"header must be a sequence of column names, got the string {header!r}")
    header = [str(h) for h in header]
    rows = [list(row) for row in rows]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells, the header {len(header)}")
    cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def tally(comparisons, label: str, reference) -> dict[str, int]:
    """How many of ``comparisons`` give each verdict of ``label`` against ``reference`` (a
    method's label, or a function of the comparison that names it, e.g. its best Kalman
    filter): a count for every word of :data:`~scoreda.experiments.statistics.OUTCOMES` and
    for ``"not comparable"`` (a comparison with fewer than 2 trials)."""
    counts = dict.fromkeys(OUTCOMES + ("not comparable",), 0)
    for c in comparisons:
        ref = reference(c) if callable(reference) else reference
        word = c.outcome(label, ref)
        counts[word] = counts.get(word, 0) + 1
    return counts


def edge_counts(comparisons) -> dict[str, int]:
    """How many tuned knobs of every method of ``comparisons`` sit, as chosen, at an edge of
    their final grid: ``"†"`` where a wider grid exists (the widening rounds ran out) and
    ``"⊥"`` at a bound of the knob's range (:meth:`Comparison.edge_marks`); ``"interior"``
    counts the others."""
    counts = {"†": 0, "⊥": 0, "interior": 0}
    for c in comparisons:
        for label, tuning in c.tunings.items():
            if not tuning.points:
                continue
            marks = c.edge_marks(label)
            for mark in marks.values():
                counts[mark] += 1
            counts["interior"] += len(c._final_grid(label)) - len(marks)
    return counts


@dataclasses.dataclass
class Comparison:
    """The outcome of :func:`compare` on one case.

    Fields:
      case: the case's name.
      reference: label of the method the differences are taken against.
      methods: label -> :class:`Method`.
      tunings: label -> :class:`Tuning`.
      results: label -> :class:`MethodResult` on the evaluation trials.
      tuning_seeds, evaluation_seeds: the trials' seeds (disjoint).
      climate_std: the case's climatological standard deviation (None: unknown); a trial
        whose time-averaged RMSE exceeds it has lost track.
      close_calls: the labels whose difference to the reference was a close call on the
        first evaluation trials (:attr:`~scoreda.experiments.statistics.Difference.close_call`),
        so that every method ran on ``close_call_seeds`` too; empty when none was.
      close_call_seeds: the seeds added then, the last ones of ``evaluation_seeds``.
    """

    case: str
    reference: str
    methods: dict
    tunings: dict
    results: dict
    tuning_seeds: tuple
    evaluation_seeds: tuple
    climate_std: float | None = None
    close_calls: tuple = ()
    close_call_seeds: tuple = ()

    def close_call_labels(self) -> list[str]:
        """The labels whose paired difference to the reference is a close call (its
        interval's distance from 0 under its half-width)."""
        return [k for k in self.results if k != self.reference and self.difference(k).close_call]

    def difference(self, label: str, reference: str | None = None) -> Difference:
        """Paired RMSE difference ``label - reference`` (default: the comparison's reference)
        over every evaluation trial: Hodges–Lehmann estimate, Wilcoxon interval and p-value
        (:func:`scoreda.experiments.statistics.paired_difference`; a diverged trial is a loss)."""
        ref = self.reference if reference is None else reference
        return paired_difference(self.results[label].rmse, self.results[ref].rmse)

    def n_lost(self, label: str) -> int:
        """Evaluation trials where ``label`` ran to the end with a time-averaged RMSE above
        ``climate_std`` (0 when the climate is unknown)."""
        if self.climate_std is None:
            return 0
        rmse = self.results[label].rmse
        return int(np.sum(np.isfinite(rmse) & (rmse > self.climate_std)))

    def best(self) -> str:
        """The label with the lowest mean RMSE among methods with no diverged trial."""
        ok = {k: np.mean(r.rmse) for k, r in self.results.items() if r.n_diverged == 0}
        return min(ok, key=ok.get) if ok else ""

    def best_of(self, labels: Sequence[str]) -> str:
        """Of ``labels``, the one with the lowest mean RMSE over every evaluation trial, a
        diverged trial counted as the worst (:func:`tuning_scores`, fewer divergences first
        among equal scores): e.g. the best of the tuned Kalman filters, the reference of a
        verdict. A method that diverged in most trials is not chosen for its survivors."""
        labels = list(labels)
        if not labels:
            raise ValueError("best_of needs at least one label")
        rmse = np.stack([self.results[k].rmse for k in labels])
        scores = tuning_scores(rmse, self.climate_std)
        diverged = np.sum(~np.isfinite(rmse), axis=1)
        return labels[int(np.lexsort((diverged, scores))[0])]

    def relative(self, label: str, reference: str | None = None) -> tuple[float, float, float]:
        """``label`` against ``reference`` (default: :meth:`best`) on the reference's scale:
        ``(ratio, low, high) = 1 + (estimate, low, high of label - reference) / mean RMSE of
        the reference`` (over its trials that ran); NaNs when fewer than 2 trials."""
        ref = self.best() if reference is None else reference
        if ref == "":
            raise ValueError(f"{self.case}: every method diverged in some trial, so there is no "
                             "best method to be relative to; name one with reference=")
        diff = self.difference(label, ref)
        ran = np.isfinite(self.results[ref].rmse)
        if diff.n < 2 or not ran.any():
            return (float("nan"),) * 3
        scale = float(np.mean(self.results[ref].rmse[ran]))
        return tuple(1.0 + v / scale for v in (diff.estimate, diff.low, diff.high))

    def outcome(self, label: str, reference: str | None = None) -> str:
        """The verdict in one word, from the paired interval: ``"better"`` or ``"worse"``
        (interval excludes 0; ``label`` against ``reference``), ``"no significant
        difference"``, or ``"not comparable"`` (fewer than 2 trials)."""
        diff = self.difference(label, reference)
        if diff.n < 2:
            return "not comparable"
        if not diff.significant:
            return "no significant difference"
        return "better" if diff.estimate < 0 else "worse"

    def verdict(self, label: str, reference: str | None = None, digits: int = 3) -> str:
        """A sentence computed from the numbers: the paired difference with its interval and
        what it means, e.g. ``"EnSF minus LETKF: -0.120 [-0.180, -0.060] (EnSF better)"``."""
        ref = self.reference if reference is None else reference
        diff = self.difference(label, ref)
        head = f"{label} minus {ref}: "
        if diff.n < 2:
            return head + f"not comparable ({diff.n} trials)"
        numbers = f"{_signed(diff.estimate, digits)} [{_signed(diff.low, digits)}, " \
                  f"{_signed(diff.high, digits)}]"
        if not diff.significant:
            meaning = "no significant difference"
        else:
            meaning = f"{label if diff.estimate < 0 else ref} better"
        extra = (f"; {diff.n_diverged} of {diff.n} trials where one of them diverged, counted "
                 "as its loss") if diff.n_diverged else ""
        return head + numbers + f" ({meaning}{extra})"

    def p_values(self, labels: Sequence[str] | None = None,
                 reference: str | None = None) -> dict:
        """label -> two-sided Wilcoxon p-value of ``label - reference`` (every label but the
        reference by default), for :func:`scoreda.experiments.statistics.holm`."""
        ref = self.reference if reference is None else reference
        labels = [k for k in self.results if k != ref] if labels is None else list(labels)
        return {k: self.difference(k, ref).p for k in labels}

    def table(self, digits: int = 3, knobs: bool = True) -> str:
        """A Markdown table: one row per method (mean RMSE over the trials that ran with its
        bootstrap 95% interval, the paired difference to the reference with its Wilcoxon 95%
        interval, spread/RMSE, CRPS, rank outliers, diverged and lost-track trials, tuned
        knobs), and a note saying how the numbers are computed."""
        n = len(self.evaluation_seeds)
        f = f"{{:.{digits}f}}"
        lost_column = self.climate_std is not None
        head = (["method", "RMSE [95% CI]", f"minus {self.reference} [95% CI]", "spread / RMSE",
                 "CRPS", "rank outliers ×", "diverged"] + (["lost track"] if lost_column else [])
                + (["knobs"] if knobs else []))
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, r in self.results.items():
            ok = np.isfinite(r.rmse)
            mean, low, high = mean_interval(r.rmse)
            if ok.sum() >= 2:
                rmse = f"{f.format(mean)} [{f.format(low)}, {f.format(high)}]"
            elif ok.sum() == 1:
                rmse = f.format(mean)
            else:
                rmse = "—"
            if label == self.reference:
                diff = "reference"
            else:
                d = self.difference(label)
                diff = "—" if d.n < 2 else (f"{_signed(d.estimate, digits)} [{_signed(d.low, digits)}, "
                                            f"{_signed(d.high, digits)}]")
            ratio = np.nanmean(r.spread) / np.nanmean(r.rmse) if ok.any() else float("nan")
            crps = np.nanmean(r.crps) if ok.any() else float("nan")
            outliers = r.outlier_ratio()
            row = [label, rmse, diff, "—" if not ok.any() else f"{ratio:.2f}",
                   "—" if not ok.any() else f.format(crps),
                   "—" if not np.isfinite(outliers) else f"{outliers:.1f}", f"{r.n_diverged}/{n}"]
            if lost_column:
                row.append(f"{self.n_lost(label)}/{n}")
            if knobs:
                row.append(self._knobs_cell(label, r))
            lines.append("| " + " | ".join(row) + " |")
        notes = [f"RMSE: mean over the trials that ran, bootstrap 95% interval; minus "
                 f"{self.reference}: Hodges–Lehmann estimate over all {n} paired trials with the "
                 "Wilcoxon signed-rank 95% interval, a diverged trial counted as a loss."]
        if lost_column:
            notes.append(f"Lost track: RMSE above the climate's standard deviation "
                         f"{self.climate_std:.3g}.")
        if self.close_calls:
            first = n - len(self.close_call_seeds)
            calls = list(self.close_calls)
            which = (f"{calls[0]} minus {self.reference} was a close call" if len(calls) == 1
                     else f"the differences to {self.reference} of "
                          f"{', '.join(calls[:-1])} and {calls[-1]} were close calls")
            notes.append(f"Trials: {which} on the first {first} (the interval's distance from 0 "
                         f"under its half-width), so every method ran "
                         f"{len(self.close_call_seeds)} more.")
        if knobs and any("†" in line for line in lines[2:]):
            notes.append("† at the edge of its tuning grid after the last widening round.")
        if knobs and any("⊥" in line for line in lines[2:]):
            notes.append("⊥ at a bound of the knob's range (no admissible value beyond it, e.g. "
                         "inflation 1 or model error 0): no wider grid can move it.")
        if knobs and any("‡" in line for line in lines[2:]):
            notes.append("‡ every point of its grid diverged on the tuning trials; the one that "
                         "survived longest is shown.")
        return "\n".join(lines) + "\n\n" + " ".join(notes)

    def edge_marks(self, label: str) -> dict:
        """Knob name -> ``"†"`` or ``"⊥"`` for each tuned knob of ``label`` whose chosen value
        sits at an edge of its final grid: † where a wider grid exists (the widening rounds
        ran out), ⊥ at a bound of the knob's range
        (:func:`~scoreda.experiments.compare.at_bound_of`). Empty when every tuned knob is
        interior."""
        grid, knobs = self._final_grid(label), self.results[label].knobs
        return {k: "⊥" if at_bound_of(self.methods[label], grid, knobs, k) else "†"
                for k, v in knobs.items() if k in grid and at_edge_of(grid, k, v)}

    def _final_grid(self, label: str) -> dict:
        """The grid ``label`` was finally tuned over (its method's, where the tuning stored
        none)."""
        tuning = self.tunings[label]
        return tuning.grid if tuning.grid is not None else self.methods[label].tuning_grid()

    def _knobs_cell(self, label: str, r: MethodResult) -> str:
        tuning, grid = self.tunings[label], self._final_grid(label)
        n_tuning = len(self.tuning_seeds)
        failed = (bool(tuning.points) and tuning.diverged is not None
                  and bool(np.all(np.asarray(tuning.diverged) >= n_tuning)))
        marks = self.edge_marks(label)
        cell = ", ".join(f"{k} {_short(v)}" + (f" {marks[k]}" if k in marks else "")
                         for k, v in r.knobs.items() if k in grid) or "fixed"
        return cell + (" ‡" if failed else "")

    def tuning_table(self, label: str, digits: int = 3) -> str:
        """The tuning grid of ``label`` as a Markdown table (one row per point scored, the
        widened ones included), with each point's diverged tuning trials."""
        tuning = self.tunings[label]
        if not tuning.points:
            return f"{label}: not tuned (fixed setting)"
        names = list(tuning.points[0])
        n_tuning = len(self.tuning_seeds)
        diverged = (np.zeros(len(tuning.points), int) if tuning.diverged is None
                    else np.asarray(tuning.diverged, int))
        lines = ["| " + " | ".join(names) + " | tuning RMSE | diverged |",
                 "|" + "---|" * (len(names) + 2)]
        order = sorted(range(len(tuning.points)),
                       key=lambda i: tuple(_sort_key(tuning.points[i][k]) for k in names))
        method = self.methods[label]
        is_tied = tied(method, tuning.scores)
        for i in order:
            point, score = tuning.points[i], tuning.scores[i]
            s = "—" if not np.isfinite(score) else f"{score:.{digits}f}"
            mark = (" ◀" if all(tuning.chosen.get(k) == v for k, v in point.items())
                    else " =" if is_tied[i] else "")
            lines.append("| " + " | ".join(_short(point[k]) for k in names)
                         + f" | {s}{mark} | {diverged[i]}/{n_tuning} |")
        method_grid = method.tuning_grid()
        added = {k: [v for v in vals if v not in method_grid.get(k, ())]
                 for k, vals in (tuning.grid or {}).items()}
        added = {k: v for k, v in added.items() if v}
        note = ("\n\nWidened beyond the given grid: "
                + "; ".join(f"{k} {', '.join(_short(v) for v in vals)}" for k, vals in added.items())
                + ".") if added else ""
        if int(is_tied.sum()) > 1:
            note += (f"\n\n= tied with the lowest score (within {100 * method.tie_rtol:.3g}%); a tie "
                     "goes to fewer divergences, the given grid, then the interior.")
        return "\n".join(lines) + note

    def tuning_tables(self, digits: int = 3) -> str:
        """:meth:`tuning_table` of every tuned method (those with a grid), each under its
        label in italics, as one Markdown block (empty when no method was tuned)."""
        return "\n\n".join(f"*{label}*\n\n" + self.tuning_table(label, digits)
                             for label in self.methods if self.tunings[label].points)

    @classmethod
    def from_record(cls, record: Mapping) -> "Comparison":
        """The comparison that :meth:`record` wrote (read back from JSON): tables, verdicts
        and intervals as the original's. A method's ``wrap`` is not stored, so a method that
        had one comes back without it (its numbers are the stored ones)."""
        try:
            # a record from before 0.4 has no tie_rtol: it chose the lowest score (0)
            methods = {label: Method(d["label"], d["filter"], d["knobs"], d["grid"],
                                     widen=d["widen"], tie_rtol=d.get("tie_rtol", 0.0))
                       for label, d in record["methods"].items()}
            tunings = {label: Tuning(d["points"], np.asarray(d["scores"], float),
                                     dict(d["chosen"]),
                                     None if d["diverged"] is None else np.asarray(d["diverged"], int),
                                     None if d["grid"] is None
                                     else {k: tuple(v) for k, v in d["grid"].items()})
                       for label, d in record["tunings"].items()}
            arr = lambda d, k, dtype=float: np.asarray(d[k], dtype)
            results = {label: MethodResult(dict(d["knobs"]), arr(d, "rmse"), arr(d, "spread"),
                                           arr(d, "crps"), arr(d, "rmse_curve"),
                                           arr(d, "rank_counts", np.int64),
                                           arr(d, "diverged_step", np.int64))
                       for label, d in record["results"].items()}
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a comparison record: {type(err).__name__}: {err}") from None
        if not set(methods) == set(tunings) == set(results):
            raise ValueError(f"a comparison record names methods {sorted(methods)}, tunings "
                             f"{sorted(tunings)} and results {sorted(results)}: they must agree")
        if record["reference"] not in methods:
            raise ValueError(f"the record's reference {record['reference']!r} is not one of its "
                             f"methods {sorted(methods)}")
        return cls(record["case"], record["reference"], methods, tunings, results,
                   tuple(record["tuning_seeds"]), tuple(record["evaluation_seeds"]),
                   record.get("climate_std"), tuple(record.get("close_calls", ())),
                   tuple(record.get("close_call_seeds", ())))

    def record(self) -> dict:
        """Every number as JSON-able lists (for ``results.json`` and the book's records);
        :meth:`from_record` reads it back."""
        return {
            "case": self.case, "reference": self.reference,
            "tuning_seeds": list(self.tuning_seeds), "evaluation_seeds": list(self.evaluation_seeds),
            "climate_std": self.climate_std,
            "close_calls": list(self.close_calls), "close_call_seeds": list(self.close_call_seeds),
            "methods": {k: m.describe() for k, m in self.methods.items()},
            "tunings": {k: tuning_json(t) for k, t in self.tunings.items()},
            "results": {k: result_json(r) for k, r in self.results.items()},
        }


def _signed(value: float, digits: int) -> str:
    if np.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if np.isfinite(value) else ("+∞" if value > 0 else "−∞")


def _sort_key(value):
    return (0, value, "") if _is_number(value) else (1, 0, str(value))
