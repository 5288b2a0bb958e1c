"""Truth-model speed: the paper's data sets against the plain approaches, in one run.

- KdV: 30 two-soliton trajectories (L = 50, 100 points, 1001 snapshots to T = 500) with our
  batched ETDRK4 solver, against the authors' approach (pseudo-spectral right-hand side
  integrated by ``scipy.integrate.odeint``), timed on one trajectory in the same run.
- Lorenz-96: the SA training set (1500 trajectories x 2500 RK4 steps, d = 20) against a
  vectorised NumPy RK4 loop.

Run: ``python benchmarks/bench_systems.py`` (results go to ``benchmarks/results/systems.*``).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from scipy.integrate import odeint

from _common import best_time, machine, write_results
from scoreda.experiments.compare import markdown_table
from scoreda.systems import kdv, lorenz96 as l96


def kdv_rhs_numpy(u, t, k):
    """Authors' approach: u_t = -6 u u_x - u_xxx with FFT derivatives (full spectrum)."""
    u_hat = np.fft.rfft(u)
    ux = np.fft.irfft(1j * k * u_hat, n=u.size)
    uxxx = np.fft.irfft((1j * k) ** 3 * u_hat, n=u.size)
    return -6.0 * u * ux - uxxx


def bench_kdv():
    ic = kdv.two_soliton_initial_condition(jax.random.key(0), (30,))
    ours = lambda: kdv.solve(ic.u0).block_until_ready()
    ours()  # compile
    t_ours = best_time(ours)
    u_ours = np.asarray(ours())

    k = kdv.wavenumbers(kdv.LENGTH, kdv.N_POINTS)
    k[-1] = 0.0
    t_out = np.arange(1001) * 0.5
    start = time.perf_counter()
    u_ref = odeint(kdv_rhs_numpy, np.asarray(ic.u0[0], np.float64), t_out, args=(k,))
    t_odeint = time.perf_counter() - start
    diff = float(np.max(np.abs(u_ref[-1] - u_ours[0, -1])))
    per_traj = t_ours / 30
    return {
        "task": "KdV paper data set (30 trajectories, T = 500)",
        "ours_s": t_ours,
        "ours_per_trajectory_s": per_traj,
        "odeint_per_trajectory_s": t_odeint,
        "speedup_per_trajectory": t_odeint / per_traj,
        "max_abs_diff_at_T": diff,
    }


def numpy_l96_dataset(x0, n_steps, dt, forcing=8.0):
    def f(x):
        return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(x, 1, -1) - x + forcing

    out = np.empty((n_steps + 1,) + x0.shape, np.float32)
    x = x0.astype(np.float32)
    out[0] = x
    for n in range(n_steps):
        k1 = f(x)
        k2 = f(x + 0.5 * dt * k1)
        k3 = f(x + 0.5 * dt * k2)
        k4 = f(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[n + 1] = x
    return out


def bench_l96():
    key = jax.random.key(0)
    ours = lambda: l96.dataset(key, 1500, 2500, 0.004).block_until_ready()
    ours()
    t_ours = best_time(ours)
    x0 = np.asarray(l96.initial_states(key, 20, (1500,)))
    t_numpy = best_time(lambda: numpy_l96_dataset(x0, 2500, 0.004), repeats=1)
    return {
        "task": "Lorenz-96 SA set (1500 x 2500 steps, d = 20)",
        "ours_s": t_ours,
        "numpy_s": t_numpy,
        "speedup": t_numpy / t_ours,
    }


def main():
    kdv_row, l96_row = bench_kdv(), bench_l96()
    m = machine()
    md = [
        "# Truth models: time to generate the paper's data",
        "",
        f"Measured on {m['cpu_count']} CPU cores, JAX {m['jax']} ({m['device']}), float32; "
        "best of 3 runs after compilation.",
        "",
        markdown_table(
            ["data set", "scoreda", "peer (same run)", "ratio"],
            [
                [
                    kdv_row["task"],
                    f"{kdv_row['ours_s']:.2f} s ({kdv_row['ours_per_trajectory_s'] * 1e3:.0f} ms per trajectory)",
                    f"scipy odeint: {kdv_row['odeint_per_trajectory_s']:.1f} s per trajectory",
                    f"{kdv_row['speedup_per_trajectory']:.0f}x",
                ],
                [
                    l96_row["task"],
                    f"{l96_row['ours_s']:.2f} s",
                    f"NumPy RK4 loop: {l96_row['numpy_s']:.1f} s",
                    f"{l96_row['speedup']:.1f}x",
                ],
            ],
        ),
        "",
        f"KdV: largest difference between the two solutions at T = 500: "
        f"{kdv_row['max_abs_diff_at_T']:.1e} (amplitudes 0.25 to 1).",
        "",
    ]
    path = write_results("systems", [kdv_row, l96_row], "\n".join(md))
    print(path.read_text())


if __name__ == "__main__":
    main()
