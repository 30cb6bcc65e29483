"""A checkbox whose ticked and unticked states differ in shape, not only in colour.

Textual's Checkbox draws the same 'X' either way and tells them apart by its colour alone,
which a monochrome terminal, a colour-blind reader or a screenshot in grey loses. This one
draws '✔' when ticked and a blank when not.
"""

from __future__ import annotations

from textual.widgets import Checkbox

TICKED, UNTICKED = "✔", " "


class TickBox(Checkbox):
    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - the name ToggleButton reads when it draws
        return TICKED if self.value else UNTICKED
