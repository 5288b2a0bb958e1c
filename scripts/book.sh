#!/usr/bin/env bash
# Set up .venv and build the book: notebooks are stored executed; any notebook with code cells
# that were never run is executed first (--all re-executes every notebook), then the HTML is
# rendered to _build/html with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "dev,book"
export PYDEVD_DISABLE_FILE_VALIDATION=1
.venv/bin/python scripts/execute_notebooks.py "$@"
.venv/bin/jupyter-book build . --all -W -n --keep-going
echo "Book: $(pwd)/_build/html/index.html"
