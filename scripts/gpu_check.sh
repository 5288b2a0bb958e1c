#!/usr/bin/env bash
# The GPU check of issue 28, for a machine with an accelerator and JAX for it already installed
# (the lent device's image: jax with CUDA, flax, optax, orbax, scipy, pytest; nothing is
# installed here). From the repository root:
#
#   bash scripts/gpu_check.sh
#
# runs the package from src/ (PYTHONPATH), the device-relevant tests on the accelerator (the
# filters, the cycle, sharding, the device module), then benchmarks/bench_gpu.py, which writes
# benchmarks/results/gpu.{json,md} (machine, versions, date). About 5 minutes on one H200.
# A module the image lacks that the tests do not need (tqdm: progress bars) is replaced by a
# silent stand-in, never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
if ! "$python" -c "import tqdm" 2>/dev/null; then
  mkdir -p "$shim/tqdm"
  cat > "$shim/tqdm/__init__.py" <<'PY'
"""A silent stand-in for tqdm (scripts/gpu_check.sh): iterates, shows nothing."""
class tqdm:
    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable
    def __iter__(self):
        return iter(self.iterable)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def update(self, *args, **kwargs): pass
    def set_postfix_str(self, *args, **kwargs): pass
    def set_postfix(self, *args, **kwargs): pass
    def set_description(self, *args, **kwargs): pass
    def close(self): pass
PY
fi
export PYTHONPATH="$PWD/src:$shim${PYTHONPATH:+:$PYTHONPATH}"
"$python" - <<'PY'
import jax
print("devices:", jax.devices(), "jax", jax.__version__)
if jax.default_backend() == "cpu":
    raise SystemExit("no accelerator: this check is for a GPU (bench_gpu.py --quick checks the script on a CPU)")
PY
timeout 360 "$python" -m pytest -q -p no:cacheprovider -x \
  tests/test_device.py tests/test_kalman.py tests/test_ensf.py tests/test_gaussian_score.py \
  tests/test_regression.py tests/test_iterative.py tests/test_transformed.py \
  tests/test_sharding.py tests/test_assimilate.py
timeout 300 "$python" benchmarks/bench_gpu.py
