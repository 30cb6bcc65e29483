"""The errors a user can fix, gathered so the front ends print them as one line.

Defined here, in a module that imports nothing heavy, so a front end can catch them without
loading torch (`powerbert status --help` should not wait for it).
"""

from __future__ import annotations


class ExperimentError(Exception):
    """A request about experiments or runs that cannot be met; one line for the user."""


class ModelError(Exception):
    """A model that cannot be found or loaded; the message is one line for the user."""


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated or corrupt; one line naming the file."""


def user_errors() -> tuple[type[BaseException], ...]:
    from powerbert.data import DataError
    from powerbert.store import StoreError

    return (DataError, ModelError, CheckpointError, ExperimentError, StoreError, ValueError, FileNotFoundError, PermissionError)


USER_ERRORS = user_errors()
