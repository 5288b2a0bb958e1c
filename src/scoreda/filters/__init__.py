"""Analysis steps: ensemble in, ensemble out (pure, jit-able). See ``ensf`` and ``kalman``."""

from scoreda.filters import ensf

__all__ = ["ensf"]
