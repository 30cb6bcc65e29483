"""The tail of a run's worker.log, appended to as the file grows (read in the fetch worker).

Lines that look like errors are red, so a traceback stands out in a long log. When there is no
log file (a run that never started, or whose folder is gone), the tail stored in runs.db with
the run's final status is shown instead.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from tui.fetch import LogChunk

ERROR_WORDS = ("Traceback", "Error", "error:", "Exception", "Killed")


def log_line(line: str) -> Text:
    style = "red" if any(word in line for word in ERROR_WORDS) else ""
    return Text(line, style=style)


class LogTail(RichLog):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, highlight=False, **kwargs)
        self._showing_fallback = False

    def start(self) -> None:
        """Forget the previous run's lines."""
        self.clear()
        self._showing_fallback = False

    def apply(self, chunk: LogChunk, fallback: str | None) -> None:
        """Append new lines; `fallback` is the tail stored in runs.db, shown without a file."""
        if chunk.missing:
            if not self._showing_fallback:
                self.clear()
                for line in (fallback or "no log yet").splitlines():
                    self.write(log_line(line))
                self._showing_fallback = True
            return
        if chunk.reset or self._showing_fallback:
            self.clear()
            self._showing_fallback = False
        for line in chunk.lines:
            self.write(log_line(line))
