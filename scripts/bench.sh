#!/usr/bin/env bash
# Set up .venv-bench (scoreda with the [bench] extra: DAPPER, SciPy) and run every benchmark;
# tables are written to benchmarks/results/ and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv-bench/bin/python ] || "$python" -m venv .venv-bench
.venv-bench/bin/python -m pip install --quiet --upgrade pip
.venv-bench/bin/python -m pip install --quiet -e ".[bench]"
export MPLBACKEND=Agg
cd benchmarks
for script in bench_systems.py bench_filters.py bench_training.py bench_harness.py bench_variants.py; do
  ../.venv-bench/bin/python "$script"
done
