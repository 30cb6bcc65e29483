"""Messages from the thread workers to the screens: small dataclasses, posted, never shared.

A worker never touches a widget; it posts one of these to its screen (post_message is
thread-safe) and the screen's handler updates the widgets on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class FetchDone(Message, bubble=False):
    """A poll finished: what it read (`payload`), or the one-line reason it could not."""

    payload: Any
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        # Two answers waiting: only the newer matters (polls never overlap, but be safe).
        return isinstance(message, FetchDone)


@dataclass
class ActionDone(Message, bubble=False):
    """A stop, resume or delete finished (ok) or was refused (not ok): tell the user."""

    text: str
    ok: bool = True


@dataclass
class DeletionPlanned(Message, bubble=False):
    """A delete was worked out (what it removes, the disk it frees): ask before doing it."""

    run_id: int
    question: str


@dataclass
class FormChecked(Message, bubble=False):
    """The new-experiment form was validated: started (experiment id) or refused (error)."""

    experiment_id: int | None
    error: str | None = None


@dataclass
class ModelsLoaded(Message, bubble=False):
    """The playground's models are in memory (`loaded`), or the reason they are not."""

    loaded: Any
    error: str | None = None


@dataclass
class PredictionReady(Message, bubble=False):
    """The playground's answer for one submitted text (or pair), per task."""

    request: int  # which submission this answers; older answers are dropped
    results: list[Any]
    notes: list[str]
    error: str | None = None


@dataclass
class EstimateReady(Message, bubble=False):
    """The new-experiment form's estimate for one state of the form (`request`; older answers
    are dropped): the line to show, and the plan it came from (None while calibrating or when
    the estimate failed, `error`)."""

    request: int
    text: str
    plan: Any = None
    error: bool = False


@dataclass
class TasksDeclared(Message, bubble=False):
    """The app read ./powerbert.toml at start: the tasks it registered, or why it could not."""

    names: list[str]
    error: str | None = None
