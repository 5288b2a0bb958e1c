"""Helpers shared by the benchmark scripts: timing, machine facts, atomic result files."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import jax
import numpy as np

from scoreda import device

RESULTS = Path(__file__).resolve().parent / "results"


#: best wall-clock seconds of ``repeats`` calls of ``fn()``: the package's timing rule
best_time = device.best_seconds


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "device": str(jax.devices()[0]),
    }


def write_results(name: str, rows, markdown: str) -> Path:
    """Write ``results/NAME.json`` and ``results/NAME.md`` atomically (temp file, then rename)."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": machine(), "rows": rows}
    for suffix, text in ((".json", json.dumps(payload, indent=2)), (".md", markdown)):
        path = RESULTS / f"{name}{suffix}"
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return RESULTS / f"{name}.md"
