"""The repaired score filters' cost against plain paired EnSF (issue 13's cost goal).

One analysis, after compilation, in float32 on this machine:

* **EnSF-LR** (paired EnSF, then the localised regression onto the unobserved components)
  against the paired EnSF it starts from, at d = 10^4 and d = 10^5 with N = 20, half the
  components observed at random, radius 2 (the goal: within 3x at d = 10^5);
* **EnSF-G** (dense localised Gaussian prior) against the paired EnSF and the LETKF at
  d = 40, 100 and 400, where it is meant to be used (its cost grows like d^3 per analysis).

EnSF runs 100 exponential-integrator steps (the book's tuned setting), EnSF-G 20 Heun steps.

Run: ``python benchmarks/bench_variants.py`` (results go to ``benchmarks/results/variants.*``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from _common import best_time, write_results
from scoreda.experiments.compare import markdown_table
from scoreda.filters import ensf, gaussian_score, kalman, regression

N = 20
ENSF = dict(n_steps=100, integrator="exponential", start="marginal", eps_b=0.05)


def problem(d: int, seed: int = 0):
    key = jax.random.key(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    ensemble = jax.random.normal(k1, (N, d)) + jnp.sin(jnp.arange(d) / 5.0)
    y = jax.random.normal(k2, (d,))
    mask = jax.random.uniform(k3, (d,)) < 0.5
    return key, ensemble, y, mask


def timed(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    return best_time(lambda: jax.block_until_ready(fn(*args)))


def main():
    rows, table = [], []
    for d in (10_000, 100_000):
        key, x, y, mask = problem(d)
        plain = jax.jit(lambda k, x, y, m: ensf.analysis(k, x, y, 1.0, mask=m, **ENSF))
        with_lr = lambda k, x, y, m: regression.analysis(k, x, y, 1.0, mask=m, radius=2.0, **ENSF)
        t_plain, t_lr = timed(plain, key, x, y, mask), timed(with_lr, key, x, y, mask)
        rows.append({"filter": "EnSF-LR", "d": d, "seconds": t_lr, "ensf_seconds": t_plain})
        table.append(["EnSF-LR (radius 2)", f"{d:,}", f"{t_lr * 1e3:.1f}", f"{t_plain * 1e3:.1f}",
                      f"{t_lr / t_plain:.2f}", "—"])
    for d in (40, 100, 400):
        key, x, y, mask = problem(d)
        plain = jax.jit(lambda k, x, y: ensf.analysis(k, x, y, 1.0, **ENSF))
        dense = jax.jit(partial(gaussian_score.analysis, obs_std=1.0, radius=4.0))
        local = jax.jit(partial(kalman.letkf, obs_std=1.0, radius=4.0))
        t_plain = timed(plain, key, x, y)
        t_g = timed(lambda k, x, y: dense(k, x, y), key, x, y)
        t_l = timed(lambda k, x, y: local(k, x, y), key, x, y)
        rows.append({"filter": "EnSF-G", "d": d, "seconds": t_g, "ensf_seconds": t_plain,
                     "letkf_seconds": t_l})
        table.append(["EnSF-G (radius 4)", f"{d:,}", f"{t_g * 1e3:.1f}", f"{t_plain * 1e3:.1f}",
                      f"{t_g / t_plain:.2f}", f"{t_g / t_l:.2f}"])
    text = ("# Repaired score filters\n\n"
            f"One analysis, N = {N}, after compilation (best of 3), float32, "
            f"{jax.devices()[0].platform.upper()}:\n\n"
            + markdown_table(["filter", "d", "ms", "paired EnSF ms", "× EnSF", "× LETKF"], table))
    print(text)
    write_results("variants", rows, text + "\n")


if __name__ == "__main__":
    main()
