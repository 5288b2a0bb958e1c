"""Typed configurations of the book's experiments and the functions that run them."""

from scoreda.experiments import toy2d, twin

__all__ = ["toy2d", "twin"]
