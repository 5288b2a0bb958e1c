"""Draw the README's figure: the two truth systems of the book (writes book/figures/systems.png).

The figure goes through the book's text-size check
(:func:`scoreda.plotting.text_sizes_at_column`): text under 8 pt at the book's 676-px column,
narrower than GitHub's README column, stops the script instead of writing the file."""

from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from scoreda import plotting
from scoreda.systems import kdv, lorenz96 as l96

OUT = Path(__file__).resolve().parent.parent / "book" / "figures" / "systems.png"


def main():
    plotting.use_style()
    x0 = l96.initial_states(jax.random.key(0), 20)
    traj = np.asarray(l96.trajectory(x0, 2500, 0.004))
    x = kdv.grid()
    u0 = kdv.soliton(x, 1.0, 10.0, kdv.LENGTH) + kdv.soliton(x, 0.5, 30.0, kdv.LENGTH)
    u = np.asarray(kdv.solve(u0, kdv.LENGTH, 0.01, 10_000, 50))
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 5.6))
    plotting.hovmoller(a, traj, np.arange(2501) * 0.004, np.arange(20), label="$x_i$")
    a.set_ylabel("component $i$")
    a.set_yticks(range(0, 20, 5))  # whole components (the image's extent centres each on its index)
    a.set_title("Lorenz-96 (d = 20, F = 8) from the paper's initial states")
    plotting.hovmoller(b, u, np.arange(u.shape[0]) * 0.5, np.asarray(x), label="u", cmap="viridis",
                       vmin=0, vmax=float(u.max()))
    b.set_ylabel("x")
    b.set_title("KdV: two solitons collide and part")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    small = [(text, round(pt, 1)) for text, pt in plotting.text_sizes_at_column(fig)
             if pt < plotting.MIN_TEXT_PT]
    if small:
        raise SystemExit(f"README figure not written: text under {plotting.MIN_TEXT_PT:g} pt at "
                         f"the book's column width: {small[:5]}")
    fig.savefig(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
