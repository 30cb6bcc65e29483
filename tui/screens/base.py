"""PollingScreen: how every screen reads runs.db without ever blocking or overlapping.

One fetch worker per screen (a thread, exclusive in its group). `poll_now` starts it only if
none is in flight; when its answer (`FetchDone`) has been shown, the next poll is set with
`set_timer`, so a slow read delays the next one instead of piling up behind it. A screen that
is covered (another screen pushed on top) stops polling and drawing, and polls afresh when
it is back.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.screen import Screen
from textual.timer import Timer

from tui.messages import FetchDone
from tui.source import Database, describe_error


class PollingScreen(Screen):
    POLL_S = 1.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = False
        self._again = False
        self._timer: Timer | None = None
        self._active = False
        self.polls = 0  # answers shown so far (tests wait on this)

    # -- what a screen provides ----------------------------------------------------------------

    def fetch_request(self) -> Any:
        """What the worker needs to know, taken on the UI thread (e.g. the last ids seen)."""
        return None

    def fetch(self, db: Database, request: Any) -> Any:
        """Runs in the worker thread: read and return plain data. Exceptions become a message."""
        raise NotImplementedError

    def show(self, payload: Any) -> None:
        """On the UI thread: put what was read on screen."""

    def show_error(self, error: str) -> None:
        self.notify(error, severity="error")

    @property
    def interval(self) -> float:
        """Seconds between polls: the screen's own, or the app's if that is shorter (tests)."""
        app_poll = getattr(self.app, "poll_s", None)
        return min(self.POLL_S, app_poll) if app_poll else self.POLL_S

    def poll_delay(self, payload: Any) -> float:
        return self.interval

    # -- the loop ------------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        self._active = True
        self.poll_now()

    def on_screen_suspend(self) -> None:
        self._active = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def poll_now(self) -> None:
        """Fetch now, or right after the fetch in flight has been shown."""
        if self._in_flight:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._in_flight = True
        self._fetch_worker(self.fetch_request())

    @work(thread=True, exclusive=True, exit_on_error=False, group="fetch")
    def _fetch_worker(self, request: Any) -> None:
        try:
            message = FetchDone(self.fetch(self.app.db, request))
        except Exception as exc:  # shown on screen; the next poll tries again
            message = FetchDone(None, describe_error(exc))
        self.post_message(message)

    def on_fetch_done(self, message: FetchDone) -> None:
        message.stop()
        self._in_flight = False
        if not self._active:
            # Covered meanwhile: draw nothing (widgets of a covered screen get no idle time,
            # so a DataTable would never resize its columns); resuming fetches afresh.
            self._again = False
            return
        delay = self.interval
        if message.error is not None:
            self.show_error(message.error)
        else:
            self.show(message.payload)
            delay = self.poll_delay(message.payload)
        self.polls += 1
        if self._again:
            self._again, delay = False, 0.0
        if self._active and self.is_attached:
            self._timer = self.set_timer(max(delay, 0.01), self.poll_now)  # 0 is not a timer
