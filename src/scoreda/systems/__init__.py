"""The truth models: pure JAX functions for stepping, integrating and measuring each system."""

from scoreda.systems import kdv, lorenz96

__all__ = ["kdv", "lorenz96"]
