#!/usr/bin/env bash
# Set up .venv and build the book: notebooks are stored executed; any notebook with code cells
# that were never run is executed first (--all re-executes every notebook), then the HTML is
# rendered to _build/html with warnings as errors. With SCOREDA_REPOSITORY_URL set (the
# published repository), the pages get Binder, Colab and repository buttons
# (scripts/book_config.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "dev,book"
export PYDEVD_DISABLE_FILE_VALIDATION=1
.venv/bin/python scripts/execute_notebooks.py "$@"
config=()
if [ -n "${SCOREDA_REPOSITORY_URL:-}" ]; then
  config=(--config "$(.venv/bin/python scripts/book_config.py "$SCOREDA_REPOSITORY_URL")")
fi
.venv/bin/jupyter-book build . --all -W -n --keep-going "${config[@]}"
echo "Book: $(pwd)/_build/html/index.html"
