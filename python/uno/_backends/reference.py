"""The reference backend: the plain-torch specifications of the primitives."""

from uno.reference import combine, inner, project

__all__ = ["combine", "inner", "project"]
