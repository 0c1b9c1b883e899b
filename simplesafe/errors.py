"""User-facing errors.

Every error a user can fix (bad config, bad input row, missing model) is a
:class:`SimplesafeError`. The CLI prints its message and exits with code 2; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class SimplesafeError(Exception):
    """An error the user can act on; its message says what to change."""

    exit_code = 2


class ConfigError(SimplesafeError):
    """A config key is unknown or a value is not allowed."""


class DataError(SimplesafeError):
    """A malformed input file, row or field.

    The message names the file, the line (or row) and the field, so the user can go
    straight to the problem.
    """

    def __init__(self, path, line: int | None, field: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")


class ModelLoadError(SimplesafeError):
    """A model could not be loaded from a hub id or local path."""
