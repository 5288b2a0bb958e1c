"""Filter speed against peers, measured in one run.

- EnSF analysis (arctan observation, n_steps = 500) in JAX against the plain NumPy
  implementation of the same equations (``ensf_numpy.py``); for the largest sizes NumPy is
  timed on fewer pseudo-time steps and scaled to 500 (said in the table).
- The machine's memory bandwidth (a STREAM-like copy) and how the paired EnSF step compares
  with the time it would take just to stream its state through memory once per step.
- Mixture estimator: compiled peak temporary memory against an (N, N, d) array.
- ETKF and LETKF time per cycle and RMSE on DAPPER's Lorenz-96 "Sakov 2008" benchmark,
  beside DAPPER's own run when ``dapper`` is installed (``pip install -e ".[bench]"``).

Run: ``python benchmarks/bench_filters.py`` (results go to ``benchmarks/results/filters.*``).
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import ensf_numpy
from _common import best_time, machine, write_results
from scoreda.experiments import twin
from scoreda.experiments.compare import markdown_table
from scoreda.filters import ensf, kalman


def _seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def stream_bandwidth() -> float:
    """Bytes per second of a large array copy (read + write), best of 5, NumPy."""
    a = np.ones(50_000_000, np.float32)  # 200 MB
    b = np.empty_like(a)
    t = best_time(lambda: np.copyto(b, a), repeats=5)
    return 2 * a.nbytes / t


def ensf_case(d, n, prior="paired", numpy_steps=500, n_steps=500):
    key = jax.random.key(0)
    truth = 3.0 * jax.random.normal(key, (d,)) + 2.0
    x = truth + jax.random.normal(jax.random.key(1), (n, d))
    y = jnp.arctan(truth)
    # jitted, as inside a cycle (an eager call also counts the clipped score evaluations)
    analyse = jax.jit(partial(ensf.analysis, obs="arctan", prior=prior, n_steps=n_steps))
    fn = lambda: analyse(key, x, y, 0.01).block_until_ready()
    fn()
    t_jax = best_time(fn, repeats=3)
    rng = np.random.default_rng(0)
    xn, yn = np.asarray(x), np.asarray(y)
    t_np = best_time(lambda: ensf_numpy.analysis(rng, xn, yn, 0.01, prior=prior, n_steps=numpy_steps),
                     repeats=1) * (n_steps / numpy_steps)
    return {"prior": prior, "d": d, "N": n, "jax_s": t_jax, "numpy_s": t_np,
            "numpy_steps_timed": numpy_steps, "ns_per_element_step": t_jax / (d * n * n_steps) * 1e9}


def mixture_memory(d=10_000, n=100):
    x = jnp.zeros((n, d))
    fn = jax.jit(lambda x: ensf.analysis(jax.random.key(0), x, jnp.zeros(d), 0.1, obs="arctan",
                                         prior="mixture", n_steps=500))
    stats = fn.lower(x).compile().memory_analysis()
    return {"d": d, "N": n, "temp_bytes": int(stats.temp_size_in_bytes),
            "nnd_bytes": n * n * d * 4}


def sakov2008(n_cycles=1200, burn_in=200):
    rows = []
    for name, filt, n in (("ETKF", partial(kalman.etkf, inflation=1.02), 40),
                          ("LETKF", partial(kalman.letkf, inflation=1.04, radius=4.0), 20),
                          ("EnKF (perturbed obs)", partial(kalman.enkf, inflation=1.06), 40)):
        cfg = twin.TwinConfig(n_cycles=n_cycles, burn_in=burn_in, n_members=n, seed=2008)
        built = twin.make_twin(cfg)
        twin.score(cfg, filt, twin=built)  # compile
        start = time.perf_counter()
        result = twin.score(cfg, filt, twin=built)
        seconds = time.perf_counter() - start
        rows.append({"method": name, "N": n, "rmse": result.rmse,
                     "ms_per_cycle": seconds / n_cycles * 1e3})
    return rows


def dapper_sakov2008(n_cycles=1200, burn_in=200):
    """DAPPER's own numbers on its Sakov 2008 set-up, or None when DAPPER is not installed."""
    try:
        import dapper.da_methods as da
        import dapper.mods.Lorenz96.sakov2008 as sakov
    except ImportError:
        return None
    hmm = sakov.HMM.copy()
    hmm.tseq.Ko = n_cycles - 1
    hmm.tseq.BurnIn = burn_in * hmm.tseq.dto
    xx, yy = hmm.simulate()
    rows = []
    for name, method, n in (("ETKF", da.EnKF("Sqrt", N=40, infl=1.02, rot=True), 40),
                            ("LETKF", da.LETKF(N=20, infl=1.04, loc_rad=4), 20),
                            ("EnKF (perturbed obs)", da.EnKF("PertObs", N=40, infl=1.06), 40)):
        start = time.perf_counter()
        method.assimilate(hmm, xx, yy, liveplots=False)
        seconds = time.perf_counter() - start
        method.stats.average_in_time()
        rows.append({"method": name, "N": n, "rmse": float(method.avrgs.err.rms.a.val),
                     "ms_per_cycle": seconds / n_cycles * 1e3})
    return rows


def main():
    m = machine()
    bandwidth = stream_bandwidth()
    ensf_rows = [
        ensf_case(20, 100),
        ensf_case(1_000, 100),
        ensf_case(100_000, 20, numpy_steps=50),
        ensf_case(1_000_000, 20, numpy_steps=5),
        ensf_case(1_000, 100, prior="mixture", numpy_steps=100),
    ]
    mem = mixture_memory()
    ours = sakov2008()
    theirs = dapper_sakov2008()

    floor_ns = 12 / bandwidth * 1e9  # read z and x, write z: 12 bytes per element and step
    lines = [
        "# Filters: speed against peers",
        "",
        f"Measured on {m['cpu_count']} CPU cores, JAX {m['jax']} ({m['device']}), float32, "
        "best of 3 after compilation; NumPy peer in the same run.",
        "",
        "### EnSF analysis (arctan observation, sigma = 0.01, 500 pseudo-time steps)",
        "",
        markdown_table(
            ["prior", "d", "N", "scoreda", "NumPy", "speed-up", "ns per element-step"],
            [[r["prior"], f"{r['d']:,}", r["N"], _seconds(r["jax_s"]),
              _seconds(r["numpy_s"]) + ("" if r["numpy_steps_timed"] == 500 else
                                         f" ({r['numpy_steps_timed']} steps timed, x{500 // r['numpy_steps_timed']})"),
              f"{r['numpy_s'] / r['jax_s']:.0f}x", f"{r['ns_per_element_step']:.2f}"]
             for r in ensf_rows],
        ),
        "",
        f"Memory bandwidth (STREAM-like copy, NumPy): {bandwidth / 1e9:.1f} GB/s. Streaming the "
        f"paired step's state through memory (read z and x, write z: 12 bytes per element) "
        f"would take {floor_ns:.2f} ns per element-step; the blocked kernel keeps each block "
        f"in cache for all 500 steps, so it is bound by arithmetic instead "
        f"({ensf_rows[3]['ns_per_element_step']:.2f} ns at d = 10⁶, "
        f"{ensf_rows[3]['ns_per_element_step'] / floor_ns:.1f} times the streaming time).",
        "",
        f"Mixture estimator, d = {mem['d']:,}, N = {mem['N']}: compiled peak temporary memory "
        f"{mem['temp_bytes'] / 2**20:.1f} MiB, against {mem['nnd_bytes'] / 2**20:.0f} MiB for one "
        "(N, N, d) float32 array.",
        "",
        "### Kalman filters on DAPPER's Lorenz-96 benchmark (Sakov 2008: d = 40, dt = 0.05, R = I)",
        "",
        "1200 cycles, RMSE averaged over the last 1000.",
        "",
    ]
    header = ["method", "N", "scoreda RMSE", "scoreda ms/cycle"]
    if theirs is not None:
        header += ["DAPPER RMSE", "DAPPER ms/cycle", "speed-up"]
    rows = []
    for i, r in enumerate(ours):
        row = [r["method"], r["N"], f"{r['rmse']:.3f}", f"{r['ms_per_cycle']:.2f}"]
        if theirs is not None:
            t = theirs[i]
            row += [f"{t['rmse']:.3f}", f"{t['ms_per_cycle']:.2f}", f"{t['ms_per_cycle'] / r['ms_per_cycle']:.0f}x"]
        rows.append(row)
    lines += [markdown_table(header, rows), ""]
    if theirs is None:
        lines += ["DAPPER is not installed here; install the `bench` extra to run it beside ours.", ""]
    path = write_results("filters", {"ensf": ensf_rows, "mixture_memory": mem, "sakov2008": ours,
                                     "dapper": theirs, "stream_bytes_per_s": bandwidth},
                         "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
