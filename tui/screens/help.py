"""`?`: every key of the screen below and of the app, from their bindings (never out of date)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

ABOUT = ("Runs keep going when you quit; opening the dashboard again shows them as they are. "
         "Arrow keys move, enter opens, the mouse works too.")


def key_rows(screen: Screen) -> list[tuple[str, str]]:
    rows, seen = [], set()
    for source in (screen, screen.app):
        for binding in source.BINDINGS:
            if isinstance(binding, tuple):
                binding = Binding(*binding)
            if not binding.description or binding.key in seen:
                continue
            seen.add(binding.key)
            keys = " / ".join(screen.app.get_key_display(Binding(k, "")) for k in binding.key.split(","))
            rows.append((keys, binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__(id="help")
        self.under = under

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for keys, description in key_rows(self.under):
            table.add_row(keys, description)
        with VerticalScroll(id="help-box") as box:
            box.border_title = "keys — escape closes"
            yield Static(table)
            yield Static(ABOUT, id="help-about")

    def action_close(self) -> None:
        self.dismiss(None)
