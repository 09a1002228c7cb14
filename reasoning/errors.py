"""Errors a user can fix: a wrong name, a missing file, a bad row.

Every user mistake raises a subclass of :class:`UserError`. A program catches it at the top,
prints its message as one line and exits with status 2, without a traceback; anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class for every mistake a user can fix (a config value, a path, an input file).

    The message is one line that names the input, what was wrong and what would be right.
    """


class DataError(UserError, ValueError):
    """A data set could not be loaded: unknown name, missing file, a malformed row, a bad selection.

    >>> isinstance(DataError("x"), ValueError) and isinstance(DataError("x"), UserError)
    True
    """
