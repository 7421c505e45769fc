"""Errors of the unlearning drivers: user mistakes get a clear message and a non-zero exit in the CLI."""

from __future__ import annotations


class UnoUserError(Exception):
    """Bad input from the user (unknown name, missing or malformed file, incompatible checkpoint)."""


class DataError(UnoUserError, ValueError):
    """A data path is missing or a data file is malformed."""


class CheckpointError(UnoUserError, ValueError):
    """A checkpoint is missing, malformed or does not fit the model it is loaded into."""


class NonFiniteError(RuntimeError):
    """A run produced NaN/Inf values; the last good checkpoint is kept."""
