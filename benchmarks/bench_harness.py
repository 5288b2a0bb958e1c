"""The comparison harness's batching: what do 10 trials cost against one?

One compiled, vmapped cycle over B trials (``scoreda.assimilate.cycle_batch``, what
``scoreda.experiments.compare`` runs) against B separate cycles (``assimilate.cycle`` in a
Python loop, one compilation shared), for EnSF and the LETKF on a Lorenz-96 twin (d = 40,
N = 20, 300 cycles). Times exclude compilation (each variant runs once before timing).

Run: ``python benchmarks/bench_harness.py`` (results go to ``benchmarks/results/harness.*``).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from _common import best_time, machine, write_results
from scoreda import assimilate
from scoreda.experiments import twin
from scoreda.experiments.compare import markdown_table
from scoreda.filters import ensf, kalman

CONFIG = twin.TwinConfig(d=40, n_members=20, n_cycles=300, burn_in=50)
FILTERS = {
    "EnSF (100 exponential steps)": partial(ensf.analysis, obs="identity", n_steps=100,
                                            integrator="exponential", start="marginal"),
    "LETKF (radius 4)": partial(kalman.letkf, obs="identity", inflation=1.04, radius=4.0),
}


def case(filter_fn, n_trials: int) -> dict:
    twins = [twin.make_twin(dataclasses.replace(CONFIG, seed=s)) for s in range(n_trials)]
    keys = jnp.stack([jax.random.key(100 + s) for s in range(n_trials)])
    stack = lambda *a: jnp.stack(a)
    truth = jnp.stack([t.truth for t in twins])
    obs = jax.tree.map(stack, *[t.observations for t in twins])
    ens0 = jnp.stack([t.ensemble0 for t in twins])
    model = twins[0].model

    def batched():
        out = assimilate.cycle_batch(keys, model, filter_fn, truth, obs, ens0)
        jax.block_until_ready(out.analysis_rmse)

    def separate():
        for i, t in enumerate(twins):
            out = assimilate.cycle(keys[i], model, filter_fn, t.truth, t.observations, t.ensemble0)
            jax.block_until_ready(out.analysis_rmse)

    batched()
    separate()
    return {"trials": n_trials, "batched_s": best_time(batched, repeats=2),
            "separate_s": best_time(separate, repeats=2)}


def main():
    rows = []
    for name, fn in FILTERS.items():
        one = case(fn, 1)
        ten = case(fn, 10)
        rows.append({"filter": name, "one_trial_s": one["batched_s"], "ten_batched_s": ten["batched_s"],
                     "ten_separate_s": ten["separate_s"]})
    table = markdown_table(
        ["filter", "1 trial", "10 trials, one vmapped cycle", "ratio to 1 trial",
         "10 trials, separate cycles", "batched / separate"],
        [[r["filter"], f"{r['one_trial_s']:.2f} s", f"{r['ten_batched_s']:.2f} s",
          f"{r['ten_batched_s'] / r['one_trial_s']:.1f}x", f"{r['ten_separate_s']:.2f} s",
          f"{r['ten_batched_s'] / r['ten_separate_s']:.2f}"] for r in rows])
    m = machine()
    text = ("# Comparison harness: batched trials\n\n"
            f"Lorenz-96 twin, d = {CONFIG.d}, N = {CONFIG.n_members}, {CONFIG.n_cycles} cycles; "
            f"{m['cpu_count']} CPU cores, {m['device']}, jax {m['jax']}\n\n" + table + "\n")
    print(text)
    write_results("harness", rows, text)


if __name__ == "__main__":
    main()
