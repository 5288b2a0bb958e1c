"""Shared fixtures. float64 is switched on only inside tests that ask for it."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test with 64-bit floats enabled, then restore the default (float32)."""
    with jax.enable_x64(True):
        yield
