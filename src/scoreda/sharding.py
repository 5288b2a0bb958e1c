"""Running EnSF on several devices: a mesh, a placed ensemble, and the same ``analysis`` and
``cycle``.

The paired EnSF update is independent per (member, component), so it splits over devices
with no communication: :func:`scoreda.filters.ensf.analysis` takes ``mesh=`` and runs its
fast path under ``jax.shard_map``, each device on its slice, drawing the noise of its
global indices (the result equals the single-device one). The forecast model needs no
change: placed on the mesh, the ensemble flows through :func:`scoreda.assimilate.cycle`'s
compiled loop and XLA partitions the model (Lorenz-96's neighbour shifts become halo
exchanges between devices)::

    mesh = sharding.make_mesh(state=4)                       # or members=2, state=2
    ens0 = sharding.place(ens0, mesh)                        # (N, d) or (N, W, d)
    filt = partial(ensf.analysis, obs="arctan", mesh=mesh)
    result = assimilate.cycle(key, model, filt, truth, observations, ens0)

**Several hosts.** Start one process per host with the same program and call
``jax.distributed.initialize(coordinator_address="host0:1234", num_processes=P,
process_id=i)`` first (on SLURM or Cloud TPU the arguments are found automatically);
``jax.devices()`` then lists every host's devices and a mesh over them spans the hosts.
Each process must build its arrays with the global shape (``jax.make_array_from_callback``
for data too large for one host).

On one CPU the test suite forces several host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``) to check that sharded and
single-device runs agree.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def make_mesh(state: int | None = None, members: int = 1) -> jax.sharding.Mesh:
    """A mesh of ``members x state`` devices (axes ``"members"`` and ``"state"``), with
    automatic (compiler-propagated) sharding. ``state`` defaults to all devices left after
    ``members``."""
    n = len(jax.devices())
    if members < 1 or n % members:
        raise ValueError(f"members must divide the {n} devices, got {members}")
    state = n // members if state is None else state
    if state < 1 or members * state > n:
        raise ValueError(f"members * state must be at most the {n} devices, got {members} * {state}")
    return jax.make_mesh((members, state), ("members", "state"), axis_types=(AxisType.Auto,) * 2)


def place(ensemble: jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
    """Put an ensemble ``(N, d)`` or ``(N, W, d)`` on ``mesh``: members over ``"members"``,
    components over ``"state"``."""
    if ensemble.ndim == 2:
        spec = PartitionSpec("members", "state")
    elif ensemble.ndim == 3:
        spec = PartitionSpec("members", None, "state")
    else:
        raise ValueError(f"ensemble must have shape (N, d) or (N, W, d), got {ensemble.shape}")
    return jax.device_put(ensemble, NamedSharding(mesh, spec))
