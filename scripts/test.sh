#!/usr/bin/env bash
# Set up .venv and run the full test suite: unit tests, the notebooks re-executed by nbval,
# each notebook once through papermill with small parameters, the book build with
# warnings as errors, and every built page opened in headless Chromium. pytest's exit code is passed on as is: 5 (no tests collected) fails.
# Two pytest workers (pytest-xdist): much of the time is single-threaded XLA compilation and
# notebook kernels, so two processes use both cores; --dist loadscope keeps each notebook's
# cells (and each test module) on one worker, in order. Pass -n 0 to run in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "dev,book"
bash scripts/setup_browser.sh
export PYDEVD_DISABLE_FILE_VALIDATION=1
# One persistent XLA compilation cache for this run's processes (both pytest workers and every
# notebook kernel they start), new for each run: a program compiled once is loaded, not compiled
# again, by a later process (compiling is most of a small papermill run: chapter 6 at its small
# sizes took 100 s with an empty cache and 34 s with a filled one). Set JAX_COMPILATION_CACHE_DIR
# to keep one between runs.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$(mktemp -d -t scoreda-xla-XXXXXX)}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}"
# the chapters only (not a temporary notebook that scripts/execute_notebooks.py may be writing)
exec .venv/bin/python -m pytest tests notebooks/[0-9][0-9]_*.ipynb --nbval-lax -p no:cacheprovider -n 2 --dist loadscope --durations=15 "$@"
