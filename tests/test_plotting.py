"""The figures' text must be readable in the book: at the text column's width
(:data:`scoreda.plotting.COLUMN_PX`, checked against the built book by tests/test_browser.py)
no text under :data:`~scoreda.plotting.MIN_TEXT_PT`. A stored notebook whose figure breaks
the rule holds the warning on stderr, which tests/test_notebooks.py refuses."""

import warnings

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scoreda import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _style():
    with matplotlib.rc_context():
        plotting.use_style()
        yield
    plt.close("all")


def _drawn(width, n_panels, fontsize=10.0):
    fig, axes = plt.subplots(1, n_panels, figsize=(width, 3.0), squeeze=False)
    for ax in axes[0]:
        ax.plot([0, 1], [0, 1], label="a line")
        ax.set_xlabel("time", fontsize=fontsize)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return fig, [str(w.message) for w in caught]


def test_text_size_at_the_column_is_font_size_times_the_display_scale():
    """A figure narrower than the column is shown at its stored size: 10 pt at 110 dpi is
    10 * 110/72 = 15.3 stored pixels, 11.5 CSS points. A wider one is scaled to the column."""
    narrow, _ = _drawn(4.0, 1)
    label = dict(plotting.text_sizes_at_column(narrow))["time"]
    assert label == pytest.approx(10 * 110 / 72 * 0.75)
    wide, _ = _drawn(12.0, 1)
    renderer = wide.canvas.get_renderer()
    width_px = wide.get_tightbbox(renderer).width * wide.dpi + 0.2 * wide.dpi
    expected = 10 * 110 / 72 * (plotting.COLUMN_PX / width_px) * 0.75
    assert dict(plotting.text_sizes_at_column(wide))["time"] == pytest.approx(expected)


def test_a_figure_with_text_too_small_at_the_column_warns_once_when_drawn():
    _, quiet = _drawn(7.0, 1)
    assert quiet == []
    fig, loud = _drawn(12.0, 4)
    assert len(loud) == 1 and "under 8 pt" in loud[0] and "'time'" in loud[0]
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        fig.canvas.draw()
    assert again == []  # once per figure
    _, small_font = _drawn(6.0, 1, fontsize=6.0)
    assert len(small_font) == 1 and "6" in small_font[0]


def test_texts_drawn_over_each_other_are_found_and_warned_about_once():
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    ax.plot([0, 1], [0, 1])
    ax.text(0.5, 0.5, "hello there")
    ax.text(0.52, 0.5, "over it")  # starts inside the first text's box
    ax.text(0.5, 0.1, "far below")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    assert plotting.overlapping_texts(fig) == [("hello there", "over it")]
    assert len(caught) == 1 and "drawn over each other (1 pairs" in str(caught[0].message)
    # a y label pushed onto its neighbour's tick labels is found too
    fig, axes = plt.subplots(1, 2, figsize=(4.0, 3.0))
    axes[1].set_ylabel("a long y label that runs into the neighbour")
    fig.canvas.draw()
    found = plotting.overlapping_texts(fig)
    assert found and all("a long y label" in b for _, b in found)


def test_log_axes_and_ticks_out_of_view_are_not_taken_for_overlaps():
    """Log axes over six decades (minor labels hidden or thinned by matplotlib) and a
    narrow semilog range (minor labels shown) draw no text over another; a tick label out of
    view, which matplotlib keeps at a stale place but does not draw, is not counted."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(7.0, 3.0), constrained_layout=True)
    for ax in axes:
        ax.loglog(np.logspace(-3, 3, 10), np.logspace(-3, 3, 10), label="a line")
        ax.set_title("title")
        ax.set_xlabel("x")
        ax.legend()
    fig.canvas.draw()
    assert plotting.overlapping_texts(fig) == []
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    ax.semilogy([1, 2], [0.5, 0.7])
    fig.canvas.draw()
    ax.set_xlim(1.0, 1.2)  # the earlier ticks (1.2 ... 2.0) now lie out of view
    fig.canvas.draw()
    assert plotting.overlapping_texts(fig) == []
