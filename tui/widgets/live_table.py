"""A DataTable that is kept in step with fresh rows by updating cells in place.

`sync(rows)` adds rows it has not seen (add_row), changes only the cells whose text or style
changed (update_cell) and removes rows that are gone: the table is never cleared and rebuilt,
so the cursor, the scroll position and the user's selection survive every poll.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widgets import DataTable


def _signature(cell: Text) -> tuple[str, str]:
    return cell.plain, str(cell.style)


def _gap(cell: Text) -> Text:
    return Text.assemble(" ", cell, justify=cell.justify, end="")


class LiveTable(DataTable):
    """Columns are given once as (key, label); rows arrive as {row key: cells}."""

    def __init__(self, columns: Sequence[tuple[str, str]] = (), **kwargs) -> None:
        # One space before every cell instead of DataTable's padding on both sides: a run table
        # with three tasks then fits 80 columns.
        super().__init__(cursor_type="row", cell_padding=0, **kwargs)
        self._column_keys: list[str] = []
        self._cells: dict[str, list[tuple[str, str]]] = {}
        self.set_columns(columns)

    def set_columns(self, columns: Sequence[tuple[str, str]]) -> None:
        """The columns, once: a table whose columns depend on data gets them with its first rows."""
        if self._column_keys or not columns:
            return
        self._column_keys = [key for key, _ in columns]
        for key, label in columns:
            self.add_column(_gap(Text(label)), key=key)

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None in an empty table."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def sync(self, rows: dict[str, list[Text]], order: Callable[[Sequence], object] | None = None) -> bool:
        """Make the table show `rows`; returns whether rows were added or removed."""
        structural = False
        with self.app.batch_update():
            for key, cells in rows.items():
                signature = [_signature(c) for c in cells]
                cells = [_gap(c) for c in cells]
                old = self._cells.get(key)
                if old is None:
                    self.add_row(*cells, key=key)
                    structural = True
                else:
                    for column, cell, before, after in zip(self._column_keys, cells, old, signature):
                        if before != after:
                            self.update_cell(key, column, cell, update_width=True)
                self._cells[key] = signature
            for key in [k for k in self._cells if k not in rows]:
                self.remove_row(key)
                del self._cells[key]
                structural = True
            if structural and order is not None:
                self.sort(key=order)
        return structural

    def set_cell(self, key: str, column: str, cell: Text) -> None:
        """Change one cell now (before the next poll brings the same value)."""
        if key in self._cells:
            self.update_cell(key, column, _gap(cell), update_width=True)
            self._cells[key][self._column_keys.index(column)] = _signature(cell)

    def move_to(self, key: str) -> None:
        """Put the cursor on the row with this key, if there is one."""
        if key in self._cells:
            self.move_cursor(row=self.get_row_index(key))
