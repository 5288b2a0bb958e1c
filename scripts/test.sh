#!/usr/bin/env bash
# Set up .venv and run the full test suite: unit tests, the notebooks re-executed by nbval,
# each notebook once through papermill with small parameters, the book build with
# warnings as errors, and every built page opened in headless Chromium. pytest's exit code is passed on as is: 5 (no tests collected) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "dev,book"
bash scripts/setup_browser.sh
export PYDEVD_DISABLE_FILE_VALIDATION=1
exec .venv/bin/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider "$@"
