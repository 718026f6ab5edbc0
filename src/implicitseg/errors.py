"""The one exception type for user errors: the CLI prints its message on one line and exits with code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (a file, a value, a checkpoint); the message names the thing and the problem."""


class NonFiniteError(InputError):
    """An image that holds NaN or infinite intensities (``implicitseg check`` reports these apart from unreadable
    files)."""
