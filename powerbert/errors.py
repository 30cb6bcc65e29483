"""The errors a user can fix, and how any error is said in one line.

Every error PowerBERT means a person to read subclasses `UserError`; the front ends print those
as one line. Anything else that escapes is a bug: the CLI says so (`internal error: ...`), keeps
the traceback in a log file and shows it with `--debug`. Defined here, in a module that imports
nothing heavy, so a front end can catch them without loading torch.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors a person can act on; the message is one line, printed as it is."""


class ConfigError(UserError, ValueError):
    """A setting (on the command line, in the form, in a profile) that cannot be used."""


class InputError(UserError, ValueError):
    """Text or files given to predict that do not fit the task or the experiment."""


class DataError(UserError):
    """A task file that cannot be read; the message names file, line, column, value, expectation."""


class ExperimentError(UserError):
    """A request about experiments or runs that cannot be met; one line for the user."""


class ModelError(UserError):
    """A model that cannot be found or loaded; the message is one line for the user."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated or corrupt; one line naming the file."""


class TrainingDiverged(UserError):
    """Training blew up (every dev score NaN): the settings, not the code, have to change."""


class StoreError(UserError):
    """Something about runs.db that a person has to act on (a bad path, a missing row, ...)."""


# Errors of the operating system about a path the user gave (a missing input file, a folder
# they cannot write): their message names the file, so they are shown as one line too.
OS_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, *OS_USER_ERRORS)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
