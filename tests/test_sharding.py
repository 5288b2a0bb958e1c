"""Sharded EnSF equals single-device EnSF (four forced CPU devices, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import sharding
from scoreda.filters import ensf


@pytest.mark.slow
def test_sharded_analysis_and_cycle_equal_the_single_device_run():
    script = Path(__file__).parent / "scripts" / "sharded_vs_single.py"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    for layout in ("1x4", "2x2", "4x1"):
        assert report[f"analysis_{layout}"] == 0.0, report  # same noise, same arithmetic
        assert report[f"devices_{layout}"] == 4
    assert report["cycle_rmse"] < 1e-5 and report["cycle_members"] < 1e-4, report
    assert report["diverged"] == [-1, -1]
    assert report["indivisible_refused"]
    assert report["moved"] > 0.1, report  # the analyses that agree did move the members


def test_a_one_device_mesh_runs_and_bad_mesh_inputs_are_refused():
    # on however many CPU devices this process has (one unless XLA_FLAGS forces more): the
    # run through shard_map must give the single-device numbers, not only the shape
    mesh = sharding.make_mesh(state=1)
    x = 2.0 * jax.random.normal(jax.random.key(1), (3, 5)) + 1.0
    y = jnp.arctan(x.mean(0)) + 0.05
    kw = dict(obs="arctan", mask=jnp.arange(5) != 2, n_steps=20)
    out = ensf.analysis(jax.random.key(0), x, y, 0.1, mesh=mesh, **kw)
    single = ensf.analysis(jax.random.key(0), x, y, 0.1, **kw)
    assert out.shape == (3, 5)
    np.testing.assert_array_equal(out, single)  # same noise, same arithmetic (measured: 0.0)
    assert float(jnp.max(jnp.abs(out - x))) > 0.1  # and the analysis moved them (by up to 1.3)
    x = jnp.ones((3, 5))
    with pytest.raises(ValueError, match="paired fast path"):
        ensf.analysis(jax.random.key(0), x, jnp.zeros(5), 1.0, mesh=mesh, prior="mixture")
    with pytest.raises(ValueError, match="members must divide"):
        sharding.make_mesh(members=len(jax.devices()) + 1)
    with pytest.raises(ValueError, match=r"\(N, d\) or \(N, W, d\)"):
        sharding.place(jnp.ones(4), mesh)
