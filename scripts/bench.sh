#!/usr/bin/env bash
# Set up .venv-bench (scoreda with the [bench] extra: DAPPER, SciPy), run the test that needs
# DAPPER (our ETKF against DAPPER's on one and the same twin), then every benchmark; tables are
# written to benchmarks/results/ and printed. DAPPER is not in the test environment: it pins
# notebook < 7 and would downgrade the Jupyter kernel stack the notebook tests run on.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv-bench/bin/python ] || "$python" -m venv .venv-bench
.venv-bench/bin/python -m pip install --quiet --upgrade pip
.venv-bench/bin/python -m pip install --quiet -e ".[bench]"
export MPLBACKEND=Agg
.venv-bench/bin/python -m pip install --quiet pytest
SCOREDA_REQUIRE_DAPPER=1 .venv-bench/bin/python -m pytest tests/test_dapper.py -q -p no:cacheprovider
cd benchmarks
for script in bench_systems.py bench_filters.py bench_training.py bench_harness.py bench_variants.py; do
  ../.venv-bench/bin/python "$script"
done
