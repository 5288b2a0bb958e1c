"""The book's figures: one style, a few reusable plots (matplotlib only)."""

from __future__ import annotations

import warnings

import matplotlib as mpl
import numpy as np

#: Colours of the quantities the book compares, the same on every page: colour-blind safe
#: (Okabe & Ito's palette, with Tol's indigo, wine and teal for the rest). A method's
#: variants share its colour and differ by line style (:func:`line_style`).
COLORS = {
    "truth": "black",
    "SSP": "#56b4e9",
    "LTP": "#d55e00",
    "EnSF": "#009e73",
    "EnSF mixture": "#009e73",
    "EnKF": "#cc79a7",
    "EnKF (inflated)": "#882255",
    "ETKF": "#332288",
    "LETKF": "#e69f00",
    "EnSF-G": "#0072b2",
    "EnSF-LR": "#44aa99",
    "observation": "#777777",
}

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "figure.figsize": (7.0, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.frameon": False,
    "image.cmap": "RdBu_r",
}


#: Width of the book's text column at a laptop's width (a 1280-pixel window), in CSS pixels,
#: as tests/test_browser.py measures it on the built chapters: a figure wider than this, as
#: stored (figure.dpi pixels per inch), is shown scaled down to it
COLUMN_PX = 676
#: the smallest text a figure may show at column width, in CSS points (0.75 CSS pixels)
MIN_TEXT_PT = 8.0


def text_sizes_at_column(fig, renderer=None, column_px: float = COLUMN_PX) -> list[tuple[str, float]]:
    """Every visible text of ``fig`` with its size as the reader sees it, in CSS points: the
    font size in points, times ``fig.dpi / 72`` stored pixels per point, times the scale at
    which the book shows the stored image, ``min(1, column_px / width)`` (the width of the
    tight bounding box the notebook stores, in pixels), times 0.75 CSS points per pixel."""
    from matplotlib.text import Text

    renderer = renderer or fig.canvas.get_renderer()
    width_px = fig.get_tightbbox(renderer).width * fig.dpi + 2 * 0.1 * fig.dpi  # pad_inches 0.1
    scale = min(1.0, column_px / width_px)
    return [(t.get_text(), t.get_fontsize() * fig.dpi / 72 * scale * 0.75)
            for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig, renderer=None, min_px: float = 1.0) -> list[tuple[str, str]]:
    """The pairs of visible texts of ``fig`` that are drawn over each other: their boxes
    (``Text.get_window_extent``) intersect by more than ``min_px``
    pixels both across and down. A tick label counts only where its tick is inside the axes
    (matplotlib keeps labels of ticks out of view, undrawn, at stale places)."""
    from matplotlib.text import Text

    renderer = renderer or fig.canvas.get_renderer()
    drawn_ticks = {}
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for axis, lo, hi, across in ((ax.xaxis, box.x0, box.x1, True), (ax.yaxis, box.y0, box.y1, False)):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                for label in (tick.label1, tick.label2):
                    drawn_ticks[id(label)] = (lo, hi, across)
    boxes = []
    for text in fig.findobj(Text):
        if not (text.get_visible() and text.get_text().strip()):
            continue
        extent = text.get_window_extent(renderer)
        if id(text) in drawn_ticks:
            lo, hi, across = drawn_ticks[id(text)]
            centre = (extent.x0 + extent.x1) / 2 if across else (extent.y0 + extent.y1) / 2
            if not lo - 1 <= centre <= hi + 1:
                continue
        boxes.append((text.get_text(), extent))
    pairs = []
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            across = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            down = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if across > min_px and down > min_px:
                pairs.append((a, b))
    return pairs


def _warn_on_small_text(fig) -> None:
    """A ``figure.hooks`` entry (set by :func:`use_style`): when the figure is drawn, warn
    once (stderr, which the book's tests refuse in a stored notebook) about text under
    :data:`MIN_TEXT_PT` at column width and about texts drawn over each other
    (:func:`overlapping_texts`)."""
    def check(event) -> None:
        if getattr(fig, "_scoreda_text_checked", False):
            return
        fig._scoreda_text_checked = True
        small = [(text, pt) for text, pt in text_sizes_at_column(fig, event.renderer)
                 if pt < MIN_TEXT_PT]
        if small:
            by_size: dict[float, list[str]] = {}
            for text, pt in small:
                by_size.setdefault(round(pt, 1), []).append(text[:30])
            shown = "; ".join(f"{pt:.1f} pt: " + ", ".join(repr(t) for t in texts[:3])
                              for pt, texts in sorted(by_size.items()))
            warnings.warn_explicit(f"figure text under {MIN_TEXT_PT:g} pt at the book's column "
                                   f"width ({shown}): enlarge the text or narrow the figure",
                                   UserWarning, "figure", 0)
        overlaps = overlapping_texts(fig, event.renderer)
        if overlaps:
            shown = "; ".join(f"{a[:30]!r} and {b[:30]!r}" for a, b in overlaps[:3])
            warnings.warn_explicit(f"figure texts drawn over each other ({len(overlaps)} pairs: "
                                   f"{shown}): move or shorten them", UserWarning, "figure", 0)

    fig.canvas.mpl_connect("draw_event", check)


def use_style() -> None:
    """Apply the book's matplotlib style to every later figure, and check each figure's text
    size at the book's column width when it is drawn (:func:`text_sizes_at_column`)."""
    mpl.rcParams.update(STYLE)
    mpl.rcParams["figure.hooks"] = ["scoreda.plotting:_warn_on_small_text"]


def hovmoller(ax, field, t, x, *, label: str = "", cmap: str = "RdBu_r", vmin=None, vmax=None,
              colorbar: bool = True):
    """Space-time picture of ``field`` (shape ``(len(t), len(x))``): time across, space up.

    The colour scale is symmetric about zero unless ``vmin``/``vmax`` are given.
    Returns the image artist.
    """
    field = np.asarray(field)
    if field.shape != (len(t), len(x)):
        raise ValueError(f"field must have shape (len(t), len(x)) = {(len(t), len(x))}, got {field.shape}")
    if vmin is None and vmax is None:
        vmax = float(np.nanmax(np.abs(field)))
        vmin = -vmax
    dx = (x[1] - x[0]) if len(x) > 1 else 1.0
    image = ax.imshow(
        field.T, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
        extent=(t[0], t[-1], x[0] - 0.5 * dx, x[-1] + 0.5 * dx), interpolation="nearest",
    )
    ax.grid(False)
    ax.set_xlabel("time")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label, pad=0.01)
    return image


def color_of(name: str) -> str | None:
    """The book's colour for a method whose name starts with a key of :data:`COLORS`."""
    for key in sorted(COLORS, key=len, reverse=True):
        if name.startswith(key):
            return COLORS[key]
    return None


def line_style(name: str) -> str:
    """Dashed for variants of a method (mixture prior, a paper's or its authors' setting),
    solid otherwise, so that a variant and its method share a colour but not a line."""
    return "--" if any(w in name for w in ("mixture", "paper", "authors")) else "-"


def rmse_curves(ax, t, curves: dict, *, bands: dict | None = None, logy: bool = True,
                ylabel: str = "RMSE"):
    """RMSE against time for several methods: ``curves[name]`` has shape ``(len(t),)``;
    ``bands[name] = (low, high)`` draws a shaded band (e.g. the spread over trials)."""
    for name, values in curves.items():
        color = color_of(name)
        ax.plot(t, values, lw=1.2, label=name, color=color, ls=line_style(name))
        if bands and name in bands:
            low, high = bands[name]
            ax.fill_between(t, low, high, alpha=0.2, color=color, lw=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=9, ncol=2)


def rank_histograms(ax, results: dict, *, labels=None):
    """Rank histograms of several methods on one axis, normalised so that a calibrated
    ensemble is flat at 1: ``results[label].rank_counts`` has shape ``(N + 1,)`` (e.g. a
    :class:`scoreda.experiments.compare.Comparison`'s ``results``). A U shape is an
    over-confident ensemble, a dome an over-dispersive one."""
    labels = list(results) if labels is None else labels
    for label in labels:
        counts = np.asarray(results[label].rank_counts, float)
        if counts.sum() == 0:
            continue
        rel = counts / counts.mean()
        ranks = np.linspace(0.0, 1.0, counts.shape[0])
        ax.step(ranks, rel, where="mid", lw=1.3, label=label, color=color_of(label),
                ls=line_style(label))
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("rank of the truth (0 to N, scaled)")
    ax.set_ylabel("frequency / flat")


def regime_map(ax, cells: dict, rows: list, columns: list, *, vmax: float = 3.0):
    """A table of coloured cells: ``cells[row, column]`` is ``(ratio, low, high)`` (RMSE
    relative to the best of the row with its 95% interval, e.g.
    :meth:`scoreda.experiments.compare.Comparison.relative`) or a short text for a cell
    without a number. Colour: the ratio on a log scale from 1 (best) to ``vmax``. A cell
    shows the ratio, and "≈ best" under it when the interval holds 1 (no significant
    difference from the best); the intervals themselves belong in a table (at a 7-in figure
    of 8 columns they do not fit a cell at a readable size). Column labels break at spaces."""
    import matplotlib.colors as mcolors

    norm = mcolors.LogNorm(1.0, vmax)
    cmap = mpl.colormaps["cividis_r"]
    for i, row in enumerate(rows):
        for j, col in enumerate(columns):
            cell = cells.get((row, col), "not run")
            if isinstance(cell, str):
                ax.add_patch(mpl.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.92"))
                ax.text(j, i, cell, ha="center", va="center", fontsize=9, color="0.35", wrap=True)
                continue
            ratio, low, high = cell
            value = min(max(ratio, 1.0), vmax)
            ax.add_patch(mpl.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, color=cmap(norm(value))))
            dark = norm(value) > 0.55
            if ratio == 1.0 and low == 1.0:
                text = "best"
            else:
                text = f"{ratio:.2f}" + ("\n≈ best" if low <= 1.0 <= high else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(columns)), [c.replace(" ", "\n") for c in columns], fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
