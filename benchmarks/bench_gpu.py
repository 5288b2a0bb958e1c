"""The GPU goals of issue 28, measured as ratios to floors run in the same process.

Run by ``scripts/gpu_check.sh`` on a machine with an accelerator (``--quick``: small sizes,
any device, to check the script itself, nothing written). Writes ``results/gpu.json`` and
``results/gpu.md`` with the machine, the versions and the date. Rows:

* EnSF's paired analysis at ``d = 10^6``, ``N = 20``, ``K = 500`` (arctan, sigma 0.01) with
  the device's default block (:func:`scoreda.device.paired_block_size`) and with a CPU's
  cache block, against the streaming floor: the time to read ``z`` and ``x`` and write ``z``
  once per step (12 bytes per element and step) at the bandwidth of a device array copy.
  Goal: at most 1.5 times the floor.
* The authors' analysis (``d = 20``, ``N = 100``, 500 Euler steps). Goal: at most 1 ms.
* The LETKF at ``d = 10^6``, ``N = 20`` (arctan, radius 4). Goal: at most 0.3 s.
* A 300-cycle EnSF twin (Lorenz-96, ``d = 40``): 100 trials in one vmapped cycle against one.
* One ETKF analysis on the accelerator against the same analysis on the host CPU: the
  largest difference (full float32 precision keeps it at float32 rounding).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, machine, write_results  # noqa: E402

from scoreda import device  # noqa: E402
from scoreda.experiments import twin  # noqa: E402
from scoreda.experiments.compare import Method, markdown_table, runner  # noqa: E402
from scoreda.experiments.rollout import AUTHORS_ENSF  # noqa: E402
from scoreda.filters import ensf, kalman  # noqa: E402


def copy_bandwidth(n_floats: int) -> float:
    """Bytes per second of a device array copy (read + write), best of 5."""
    a = jnp.ones(n_floats, jnp.float32)
    copy = jax.jit(lambda v: v + 0.0)
    copy(a).block_until_ready()
    return 2 * a.nbytes / best_time(lambda: copy(a).block_until_ready(), repeats=5)


def paired_rows(d: int, n: int, k: int, bandwidth: float) -> list[dict]:
    key = jax.random.key(0)
    truth = 3.0 * jax.random.normal(key, (d,)) + 2.0
    x = truth + jax.random.normal(jax.random.key(1), (n, d))
    y = jnp.arctan(truth)
    floor = 12 * d * n * k / bandwidth
    rows = []
    for label, block in (("device default", None),
                         ("CPU cache block", device.paired_block_size(n, d, "cpu"))):
        analyse = jax.jit(partial(ensf.analysis, obs="arctan", n_steps=k, block_size=block))
        analyse(key, x, y, 0.01).block_until_ready()
        seconds = best_time(lambda: analyse(key, x, y, 0.01).block_until_ready())
        rows.append({"work": f"EnSF paired, d = {d:,}, N = {n}, K = {k}, {label}",
                     "seconds": seconds, "floor_seconds": floor, "ratio": seconds / floor,
                     "goal": "<= 1.5 x floor" if block is None else "-"})
    return rows


def authors_row() -> dict:
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (100, 20)) + 3.0
    y = jnp.arctan(x.mean(0))
    knobs = {k: v for k, v in AUTHORS_ENSF.items()}
    analyse = jax.jit(partial(ensf.analysis, obs="arctan", **knobs))
    analyse(key, x, y, 0.01).block_until_ready()
    seconds = best_time(lambda: analyse(key, x, y, 0.01).block_until_ready(), repeats=10)
    return {"work": "authors' EnSF, d = 20, N = 100, 500 Euler steps", "seconds": seconds,
            "floor_seconds": None, "ratio": seconds / 1e-3, "goal": "<= 1 ms"}


def letkf_row(d: int, n: int) -> dict:
    x = jax.random.normal(jax.random.key(1), (n, d)) + 2.0
    y = jnp.arctan(x.mean(0) + 0.1)
    analyse = jax.jit(partial(kalman.letkf, None, obs="arctan", radius=4.0, inflation=1.02))
    analyse(x, y, 0.01).block_until_ready()
    seconds = best_time(lambda: analyse(x, y, 0.01).block_until_ready())
    return {"work": f"LETKF, arctan, d = {d:,}, N = {n}, radius 4", "seconds": seconds,
            "floor_seconds": None, "ratio": seconds / 0.3, "goal": "<= 0.3 s"}


def trials_row(n_trials: int, n_cycles: int) -> dict:
    config = twin.TwinConfig(n_cycles=n_cycles, burn_in=n_cycles // 3, obs="arctan",
                             obs_std=0.05, dt=0.01, steps_per_cycle=10)
    case = twin.case(config, "bench")
    method = Method("EnSF", "EnSF", knobs={"n_steps": 100, "integrator": "exponential"},
                    grid={})
    seeds = list(range(n_trials))
    trials = runner.make_trials(case, seeds)
    point = [{"eps_b": 0.025}]

    def run(k):
        out = runner._run(case, method, trials[:k], seeds[:k], point, False, k)
        jax.block_until_ready(out[0].analysis_rmse)

    run(1), run(n_trials)
    one = best_time(lambda: run(1), repeats=2)
    many = best_time(lambda: run(n_trials), repeats=2)
    return {"work": f"EnSF twin, {n_cycles} cycles: {n_trials} trials in one vmapped cycle "
                    f"vs 1", "seconds": many, "floor_seconds": one, "ratio": many / one,
            "goal": "-"}


def precision_row() -> dict:
    """One ETKF analysis on the default device and on the host CPU: the largest difference."""
    x = jax.random.normal(jax.random.key(1), (20, 1000)) + 2.0
    y = jnp.arctan(x.mean(0) + 0.1)
    here = np.asarray(kalman.etkf(None, x, y, 0.05, obs="arctan"))
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        there = np.asarray(kalman.etkf(None, jax.device_put(x, cpu), jax.device_put(y, cpu), 0.05,
                                       obs="arctan"))
    diff = float(np.max(np.abs(here - there)))
    return {"work": "ETKF, d = 1,000, N = 20: largest difference, device vs CPU", "seconds": None,
            "floor_seconds": None, "ratio": diff, "goal": "float32 rounding (~1e-5)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes on any device; checks the script, writes nothing")
    args = parser.parse_args(argv)
    if not args.quick and not device.is_accelerator():
        print(f"no accelerator here ({jax.devices()}): run with --quick to check the script")
        return 2
    d_big, k = (4_000, 20) if args.quick else (1_000_000, 500)
    bandwidth = copy_bandwidth(min(250_000_000, 50 * d_big))
    rows = paired_rows(d_big, 20, k, bandwidth)
    rows += [authors_row(), letkf_row(d_big, 20),
             trials_row(2 if args.quick else 100, 20 if args.quick else 300), precision_row()]
    fmt = lambda v: "-" if v is None else (f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s")
    table = markdown_table(["work", "time", "floor / peer", "ratio", "goal"],
                           [[r["work"], fmt(r["seconds"]), fmt(r["floor_seconds"]),
                             f"{r['ratio']:.3g}", r["goal"]] for r in rows])
    m = machine()
    text = "\n".join([
        "# GPU: the goals of issue 28", "",
        f"Measured {datetime.date.today().isoformat()} on {m['device']} (JAX {m['jax']}, "
        f"{m['platform']}); device copy bandwidth {bandwidth / 1e9:.0f} GB/s; best of 3 "
        "after compilation.", "", table, ""])
    print(text)
    if not args.quick:
        print(f"written: {write_results('gpu', rows, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
