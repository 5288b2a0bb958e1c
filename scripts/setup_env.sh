#!/usr/bin/env bash
# Create (once) the virtual environment .venv and install scoreda with the given extras.
# Usage: source scripts/setup_env.sh EXTRAS   (e.g. "dev,book")
set -euo pipefail
extras=${1:-dev,book}
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
# MathJax for offline equations in the book (once; pinned and checked)
.venv/bin/python scripts/fetch_mathjax.py
