"""Run in a subprocess with four forced host devices (see tests/test_sharding.py): sharded
and single-device EnSF analyses and cycles must agree."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"  # the four devices are host devices, also beside a GPU

import json  # noqa: E402
import sys  # noqa: E402
from functools import partial  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from scoreda import assimilate, observe, sharding  # noqa: E402
from scoreda.filters import ensf  # noqa: E402
from scoreda.systems import lorenz96 as l96  # noqa: E402

assert len(jax.devices()) == 4, jax.devices()
n, d = 8, 2048
x = 2 * jax.random.normal(jax.random.key(0), (n, d)) + 3
y = jnp.arctan(x.mean(0)) + 0.05
mask = jnp.arange(d) % 3 != 0
kw = dict(obs="arctan", mask=mask, n_steps=20, block_size=128)
reference = ensf.analysis(jax.random.key(1), x, y, 0.05, **kw)
# how far the analysis moved the members: agreement between two runs that moved nothing
# would prove nothing
report = {"moved": float(jnp.max(jnp.abs(reference - x)))}
for members, state in [(1, 4), (2, 2), (4, 1)]:
    mesh = sharding.make_mesh(state=state, members=members)
    out = ensf.analysis(jax.random.key(1), sharding.place(x, mesh), y, 0.05, mesh=mesh, **kw)
    report[f"analysis_{members}x{state}"] = float(jnp.max(jnp.abs(out - reference)))
    report[f"devices_{members}x{state}"] = len(out.sharding.device_set)

try:  # 2046 components cannot be split over 4 devices
    ensf.analysis(jax.random.key(1), x[:, :2046], y[:2046], 0.05, mesh=sharding.make_mesh(state=4),
                  obs="arctan", n_steps=2)
    report["indivisible_refused"] = False
except ValueError as error:
    report["indivisible_refused"] = "divisible" in str(error)

truth = l96.trajectory(x[0], 39, 0.01)
obs = observe.observe(jax.random.key(5), truth, "arctan", 0.05, schedule=jnp.arange(40) % 5 == 0)
model = assimilate.deterministic(lambda s: l96.step(s, 0.01))
ens0 = truth[0] + jax.random.normal(jax.random.key(6), (n, d))
single = assimilate.cycle(jax.random.key(7), model, partial(ensf.analysis, obs="arctan", n_steps=20, integrator="exponential"),
                          truth, obs, ens0)
mesh = sharding.make_mesh(state=2, members=2)
sharded = assimilate.cycle(jax.random.key(7), model,
                           partial(ensf.analysis, obs="arctan", n_steps=20, integrator="exponential", mesh=mesh),
                           truth, obs, sharding.place(ens0, mesh))
report["cycle_rmse"] = float(np.max(np.abs(sharded.analysis_rmse - single.analysis_rmse)))
report["cycle_members"] = float(np.max(np.abs(sharded.final_members - single.final_members)))
report["diverged"] = [single.diverged_step, sharded.diverged_step]
json.dump(report, sys.stdout)
