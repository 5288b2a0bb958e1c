"""scoreda.device: defaults chosen by the platform (tested on a CPU by naming another), and
every filter's matrix products traced at float32 precision."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import device
from scoreda.filters import ensf, kalman, registry, reverse_sde


def test_the_paired_block_is_a_cache_block_on_a_cpu_and_the_whole_state_elsewhere():
    assert device.paired_block_size(20, 10**6, "cpu") == 65_536 // 20 == 3276
    assert device.paired_block_size(1000, 10**6, "cpu") == 128  # never below 128 components
    assert device.paired_block_size(20, 40, "cpu") == 40  # never above d
    assert device.paired_block_size(20, 10**6, "gpu") == 10**6
    assert device.paired_block_size(20, 10**6, "TPU") == 10**6
    assert device.paired_block_size(np.int64(20), np.int64(1000), "cpu") == 1000
    assert device.platform() == jax.default_backend()
    assert device.is_accelerator("cpu") is False and device.is_accelerator("gpu") is True


@pytest.mark.parametrize("args, message", [
    ((0, 100, "cpu"), "n_members must be an integer >= 1"),
    ((20, 0, "cpu"), "d must be an integer >= 1"),
    ((20.0, 100, "cpu"), "n_members must be an integer >= 1"),
    ((True, 100, "cpu"), "n_members must be an integer >= 1"),
    ((20, 100, ""), "platform must be a name"),
    ((20, 100, 3), "platform must be a name"),
])
def test_bad_sizes_and_platform_names_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        device.paired_block_size(*args)


def test_on_an_accelerator_ensf_runs_the_whole_state_as_one_block(monkeypatch):
    """Faking the platform: the paired path takes one block of all d components (on a CPU
    several), and the analysis is the same either way (blocked runs draw the same noise)."""
    seen = []
    original = reverse_sde.paired_blocked

    def spy(*args, **kwargs):
        seen.append(kwargs["block_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(reverse_sde, "paired_blocked", spy)
    key = jax.random.key(0)
    ens = jax.random.normal(jax.random.key(1), (20, 5000))
    y = jnp.arctan(jax.random.normal(jax.random.key(2), (5000,)))
    on_cpu = ensf.analysis(key, ens, y, 0.05, obs="arctan", n_steps=20)
    monkeypatch.setattr(device, "platform", lambda: "gpu")
    on_gpu = ensf.analysis(key, ens, y, 0.05, obs="arctan", n_steps=20)
    assert seen == [65_536 // 20, 5000]
    np.testing.assert_allclose(np.asarray(on_gpu), np.asarray(on_cpu), rtol=0, atol=1e-5)


def _dot_precisions(text: str) -> list[str]:
    return [m.group(1) if m else "DEFAULT" for m in
            (re.search(r"precision = \[(\w+), \w+\]", line)
             for line in text.splitlines() if "dot_general" in line)]


def test_every_filters_lowered_program_carries_full_precision():
    """Each registry filter, lowered inside a jitted caller (as the cycle does): every matrix
    product says HIGHEST (a GPU would otherwise round its inputs to TensorFloat-32). The same
    algebra lowered without the wrapper says nothing, so the check can fail."""
    key = jax.random.key(0)
    ens = jax.random.normal(jax.random.key(1), (10, 12)) + 1.0
    y = jnp.arctan(ens[0] + 0.1)
    with_products = 0
    for name, spec in registry.FILTERS.items():
        fn = spec.bind(obs="arctan", **({"n_steps": 5} if "n_steps" in spec.knobs else {}))
        text = jax.jit(lambda e, yy: fn(key, e, yy, 0.05)).lower(ens, y).as_text()
        precisions = _dot_precisions(text)
        assert set(precisions) <= {"HIGHEST"}, (name, precisions)
        with_products += bool(precisions)
    assert with_products >= 6  # the Kalman filters, EnSF-G, EnSF-LR, the mixture prior
    bare = jax.jit(lambda e, yy: kalman._etkf(e, yy, jnp.ones(12) / 0.05**2, 1.0,
                                              h=jnp.arctan)).lower(ens, y).as_text()
    assert _dot_precisions(bare) and "HIGHEST" not in _dot_precisions(bare)


def test_a_callers_precision_outside_the_filter_is_left_alone():
    seen = []

    @device.full_precision
    def filt(x):
        seen.append(jax.config.jax_default_matmul_precision)
        return x

    with jax.default_matmul_precision("bfloat16"):
        filt(1.0)
        outside = jax.config.jax_default_matmul_precision
    assert seen == ["highest"] and outside == "bfloat16"
    assert filt.__wrapped__ is not None and filt.__name__ == "filt"


@pytest.mark.slow
def test_the_gpu_benchmark_runs_at_small_sizes_and_refuses_a_cpu_for_the_record(capsys):
    """benchmarks/bench_gpu.py --quick (what scripts/gpu_check.sh runs at full size on a GPU)
    runs here at small sizes and writes nothing; without --quick a CPU is refused, so no CPU
    number is ever recorded as a GPU result."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = path.parent / "results" / "gpu.json"
    before = results.read_text() if results.exists() else None
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "EnSF paired, d = 4,000" in out and "largest difference, device vs CPU | - | - | 0 |" in out
    assert bench.main([]) == 2 and "no accelerator here" in capsys.readouterr().out
    assert (results.read_text() if results.exists() else None) == before


def test_compiled_cost_reports_the_programs_bytes_and_the_best_time(monkeypatch):
    """The memory is the compiled program's arguments + outputs + temporaries (here a
    (1000, 1000) float32 matrix in and out: at least 8 MB), the time the smallest of the
    timed calls (a fake clock that makes the second call the fastest)."""
    x = jnp.ones((1000, 1000), jnp.float32)
    cost = device.compiled_cost(lambda a: a * 2.0, x, repeats=3)
    assert cost.memory_bytes >= 2 * x.nbytes
    assert 0 < cost.seconds < 10
    ticks = iter([0.0, 5.0, 10.0, 11.0, 20.0, 27.0])  # calls of 5, 1 and 7 s
    monkeypatch.setattr(device, "_clock", lambda: next(ticks))
    assert device.best_seconds(lambda: None, repeats=3) == 1.0
    for bad in (0, 1.5, "3"):
        with pytest.raises(ValueError, match="repeats"):
            device.best_seconds(lambda: None, repeats=bad)
