r"""What the device is, and what it implies for the package's defaults.

One place answers "CPU or accelerator?" so that defaults that depend on it are chosen the
same way everywhere, and can be tested on a CPU by naming another platform:

* :func:`platform`: the backend JAX computes on (``"cpu"``, ``"gpu"``, ``"tpu"``).
* :func:`paired_block_size`: how many state components EnSF's paired fast path treats in one
  block. On a CPU, :data:`CPU_BLOCK_FLOATS` floats per block (``max(128, 65,536 // N)``
  components for ``N`` members), so a block's work stays in a core's cache; on an
  accelerator, the whole state in one block: measured on one H200 at ``d = 10^6``,
  ``N = 20``, the CPU's blocking made the GPU run 153 small blocks one after another, 21
  times slower than one block (issue 28).
* :func:`best_seconds` and :func:`compiled_cost`: what one call costs here (the best wall
  time, and a compiled program's memory), as the book's timings and the benchmarks measure
  it.
* :func:`full_precision`: the filters' matrix products at float32 precision
  (``jax.default_matmul_precision("highest")`` while the filter is traced). A CPU computes
  float32 products in full precision anyway (the results are bit for bit the same with or
  without it); a GPU by default rounds their inputs to TensorFloat-32 (10-bit mantissa), and
  one ETKF analysis on an H200 then differed from the CPU's by 1.3e-3 (2.4e-5 in full
  precision).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, NamedTuple

import jax

from scoreda import _checks

#: floats of one block of EnSF's paired path on a CPU: ``N x block`` float32 values, 256 KiB
CPU_BLOCK_FLOATS = 65_536

#: the smallest block on a CPU (components), whatever the ensemble size
MIN_CPU_BLOCK = 128

#: the clock of :func:`best_seconds` (a test may replace it)
_clock = time.perf_counter

#: the matmul precision of every filter (see :func:`full_precision`)
FILTER_PRECISION = "highest"


def platform() -> str:
    """The platform of JAX's default backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    return jax.default_backend()


def is_accelerator(name: str | None = None) -> bool:
    """Whether ``name`` (default: :func:`platform`) is an accelerator (anything but a CPU)."""
    return (platform() if name is None else _platform_name(name)) != "cpu"


def paired_block_size(n_members: int, d: int, name: str | None = None) -> int:
    """Components per block of EnSF's paired path for ``n_members`` members and ``d``
    components on platform ``name`` (default: :func:`platform`): ``min(d, max(128, 65,536 //
    N))`` on a CPU, ``d`` (one block) on an accelerator."""
    n_members, d = _checks.integer("n_members", n_members, 1), _checks.integer("d", d, 1)
    if is_accelerator(name):
        return d
    return min(d, max(MIN_CPU_BLOCK, CPU_BLOCK_FLOATS // n_members))


def full_precision(fn: Callable) -> Callable:
    """``fn`` with its matrix products traced at :data:`FILTER_PRECISION` (float32 on a GPU,
    not TensorFloat-32), also when it is called inside another jitted function. A caller's
    own ``jax.default_matmul_precision`` outside the filter is left as it is."""

    @functools.wraps(fn)
    def precise(*args, **kwargs):
        with jax.default_matmul_precision(FILTER_PRECISION):
            return fn(*args, **kwargs)

    return precise


def best_seconds(call: Callable[[], object], repeats: int = 3) -> float:
    """The best wall time of ``repeats`` calls of ``call()`` (the least disturbed by other
    work on the machine), each timed until its result is ready (``jax.block_until_ready``,
    so asynchronous dispatch is included). Compile or warm up before: every call is timed.
    ``repeats`` >= 1."""
    _checks.integer("repeats", repeats, 1)
    best = math.inf
    for _ in range(repeats):
        start = _clock()
        jax.block_until_ready(call())
        best = min(best, _clock() - start)
    return best


class CompiledCost(NamedTuple):
    """What one call of a compiled function costs on this device.

    Fields:
      seconds: the best wall time of one call (compiled first; the inputs already on the
        device), over the calls timed.
      memory_bytes: the compiled program's memory: its arguments, outputs and temporaries
        (XLA's ``memory_analysis``; 0 where the backend does not report it).
    """

    seconds: float
    memory_bytes: int


def compiled_cost(fn: Callable, *args, repeats: int = 3) -> CompiledCost:
    """Compile ``fn(*args)`` (``jax.jit``), run it once, then time ``repeats`` calls and keep
    the best (the least disturbed by other work on the machine); each call blocks until its
    result is ready. ``repeats`` >= 1."""
    _checks.integer("repeats", repeats, 1)
    compiled = jax.jit(fn).lower(*args).compile()
    stats = compiled.memory_analysis()
    memory = 0 if stats is None else int(stats.argument_size_in_bytes
                                         + stats.output_size_in_bytes
                                         + stats.temp_size_in_bytes)
    jax.block_until_ready(compiled(*args))
    return CompiledCost(best_seconds(lambda: compiled(*args), repeats), memory)


def _platform_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"platform must be a name such as 'cpu' or 'gpu', got {name!r}")
    return name.lower()

