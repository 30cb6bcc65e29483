"""The errors a user can fix, gathered so the front ends print them as one line."""

from __future__ import annotations

from powerbert.checkpoint import CheckpointError
from powerbert.data import DataError
from powerbert.model import ModelError


class ExperimentError(Exception):
    """A request about experiments or runs that cannot be met; one line for the user."""


def user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [DataError, ModelError, CheckpointError, ExperimentError, ValueError, FileNotFoundError, PermissionError]
    try:
        from powerbert.store import StoreError

        errors.append(StoreError)
    except ImportError:  # the store is optional for plain training
        pass
    return tuple(errors)


USER_ERRORS = user_errors()
