"""The tail of a run's worker.log, appended to as the file grows (read in the fetch worker).

Long lines wrap at the pane's width, so an eval line keeps its last scores and a traceback its
whole path; the pane never scrolls sideways, and a wrapped line's continuation is indented so it
does not read as a line of its own. The lines are kept as written and wrapped again when the
pane's width changes (RichLog wraps once, when a line is written). Lines that look
like errors are red, so a traceback stands out in a long log. When there is no log file (a run
that never started, or whose folder is gone), the tail stored in runs.db with the run's final
status is shown instead.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from tui.fetch import LogChunk

ERROR_WORDS = ("Traceback", "Error", "error:", "Exception", "Killed")
MAX_LINES = 2000
INDENT = "  "  # before each continuation of a wrapped line


def log_line(line: str) -> Text:
    style = "red" if any(word in line for word in ERROR_WORDS) else ""
    return Text(line, style=style)


class LogTail(RichLog):
    def __init__(self, **kwargs) -> None:
        # min_width=1: RichLog renders every line at least min_width (78 by default) wide and
        # crops it to the pane, which cut lines in a pane narrower than that.
        super().__init__(max_lines=MAX_LINES, min_width=1, wrap=True, markup=False, highlight=False, **kwargs)
        self.texts: deque[Text] = deque(maxlen=MAX_LINES)  # the lines as written, unwrapped
        self._showing_fallback = False
        self._wrapped_at = 0  # the width the shown lines were wrapped to

    def start(self) -> None:
        """Forget the previous run's lines."""
        self._clear()
        self._showing_fallback = False

    def apply(self, chunk: LogChunk, fallback: str | None) -> None:
        """Append new lines; `fallback` is the tail stored in runs.db, shown without a file."""
        if chunk.missing:
            if not self._showing_fallback:
                self._clear()
                for line in (fallback or "no log yet").splitlines():
                    self._add(log_line(line))
                self._showing_fallback = True
            return
        if chunk.reset or self._showing_fallback:
            self._clear()
            self._showing_fallback = False
        for line in chunk.lines:
            self._add(log_line(line))

    def _add(self, text: Text) -> None:
        self.texts.append(text)
        self._write_wrapped(text)

    def _write_wrapped(self, text: Text) -> None:
        width = self.scrollable_content_region.width
        if text.cell_len <= width or width <= 2 * len(INDENT):
            # Fits, or no width yet: RichLog keeps a line written before it has a size until the
            # first resize, which writes every line again, wrapped like this.
            self.write(text)
            return
        first, *rest = text.wrap(self.app.console, width - len(INDENT))
        self.write(first)
        for line in rest:
            self.write(Text.assemble(INDENT, line))

    def _clear(self) -> None:
        self.texts.clear()
        self.clear()

    def on_resize(self, event: Resize) -> None:
        super().on_resize(event)  # RichLog writes what came before it had a size
        width = self.scrollable_content_region.width
        if width and width != self._wrapped_at:
            self._wrapped_at = width
            self.clear()
            for text in self.texts:
                self._write_wrapped(text)
