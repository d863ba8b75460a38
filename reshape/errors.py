"""Exception hierarchy shared by every stage.

The CLI turns a :class:`ReshapeError` into one line on stderr and its ``exit_code``; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class ReshapeError(Exception):
    """Base class: an error the user can act on, reported as one line."""

    exit_code = 1


class BadInputError(ReshapeError, ValueError):
    """Bad input or usage (unreadable file, wrong schema, escaping path, ...): exit code 2."""

    exit_code = 2


class ResourceError(ReshapeError, OSError):
    """A filesystem or resource fault (read-only, no space, permission, name too long, too many open files,
    decompression bomb, out of memory): one line naming the path and the cause, exit code 2."""

    exit_code = 2


class StageError(ReshapeError, RuntimeError):
    """A stage failed while running on valid input: exit code 1."""

    exit_code = 1


def where(path: object, row: int | None = None) -> str:
    """Format a location prefix for error messages: ``file`` or ``file, row N``."""
    return f"{path}" if row is None else f"{path}, row {row}"
