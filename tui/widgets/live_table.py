"""A DataTable that is kept in step with fresh rows by updating cells in place.

`sync(rows)` adds rows it has not seen (add_row), changes only the cells whose text or style
changed (update_cell) and removes rows that are gone: the table is never cleared and rebuilt
for new data, so the cursor, the scroll position and the user's selection survive every poll.

A table may name `optional` columns: when every column does not fit its width, these are left
out, in that order, so that the columns shown are never cut short (a DataTable wider than its
widget crops the last columns). The table is rebuilt only when the set of columns shown changes
(a resize, or a row much wider than the others); the cursor stays on its row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.events import Resize
from textual.widgets import DataTable

GAP = 1  # the space written before every cell (_gap)


def _signature(cell: Text) -> tuple[str, str]:
    return cell.plain, str(cell.style)


def _gap(cell: Text) -> Text:
    return Text.assemble(" ", cell, justify=cell.justify, end="")


class LiveTable(DataTable):
    """Columns are given once as (key, label); rows arrive as {row key: cells}."""

    def __init__(self, columns: Sequence[tuple[str, str]] = (), *, optional: Sequence[str] = (), **kwargs) -> None:
        # One space before every cell instead of DataTable's padding on both sides: half the
        # room between columns, so fewer optional columns have to go at 80 columns.
        super().__init__(cursor_type="row", cell_padding=0, **kwargs)
        self._columns: list[tuple[str, str]] = []  # every column, shown or not
        self._column_keys: list[str] = []  # the columns shown, in order
        self._optional = list(optional)
        self._rows: dict[str, list[Text]] = {}  # every cell of every row, shown or not
        self._cells: dict[str, list[tuple[str, str]]] = {}
        self._order: Callable[[Sequence], object] | None = None
        self.set_columns(columns)

    def set_columns(self, columns: Sequence[tuple[str, str]], optional: Sequence[str] | None = None) -> None:
        """The columns, once: a table whose columns depend on data gets them (and which of them
        are optional, if not given before) with its first rows."""
        if self._columns or not columns:
            return
        self._columns = list(columns)
        if optional is not None:
            self._optional = list(optional)
        self._show_columns(self._fitting())

    def _show_columns(self, keys: list[str]) -> None:
        labels = dict(self._columns)
        self._column_keys = keys
        for key in keys:
            self.add_column(_gap(Text(labels[key])), key=key)

    def _shown(self, cells: list[Text]) -> list[Text]:
        index = {key: i for i, (key, _) in enumerate(self._columns)}
        return [_gap(cells[index[key]]) for key in self._column_keys]

    # -- which columns fit ---------------------------------------------------------------------

    def _fitting(self) -> list[str]:
        """Every column, less the optional ones (in their order) that must go for the rest to fit."""
        keys = [key for key, _ in self._columns]
        room = self._room()
        if room is None or not self._optional:
            return keys
        widths = {}
        for i, (key, label) in enumerate(self._columns):
            cells = [row[i].cell_len for row in self._rows.values() if i < len(row)]
            widths[key] = GAP + max([Text(label).cell_len, *cells])
        for key in self._optional:
            if sum(widths[k] for k in keys) <= room:
                break
            keys.remove(key)
        return keys

    def _room(self) -> int | None:
        """Columns the cells may take: the width less a vertical scrollbar's (so that one
        appearing with more rows cuts nothing); None before the table has a size."""
        width = self.size.width
        if not width:
            return None
        return width - self.styles.scrollbar_size_vertical

    def _refit(self) -> bool:
        """Show the columns that fit now; returns whether that changed them (and rebuilt)."""
        if not self._columns:
            return False
        keys = self._fitting()
        if keys == self._column_keys:
            return False
        cursor = self.cursor_key
        self.clear(columns=True)
        self._show_columns(keys)
        for key, cells in self._rows.items():
            self.add_row(*self._shown(cells), key=key)
        if self._order is not None:
            self.sort(key=self._order)
        if cursor is not None:
            self.move_to(cursor)
        return True

    def on_resize(self, event: Resize) -> None:
        self._refit()

    # -- rows ----------------------------------------------------------------------------------

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None in an empty table."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def sync(self, rows: dict[str, list[Text]], order: Callable[[Sequence], object] | None = None) -> bool:
        """Make the table show `rows`; returns whether rows were added or removed.

        `order` sorts rows when some were added: it gets the cells of the columns shown, of
        which the first ones (before any optional column) are always there."""
        self._order = order
        structural = False
        with self.app.batch_update():
            self._rows = dict(rows)
            if self._refit():
                self._cells = {key: [_signature(c) for c in cells] for key, cells in rows.items()}
                return True
            index = {key: i for i, (key, _) in enumerate(self._columns)}
            for key, cells in rows.items():
                signature = [_signature(c) for c in cells]
                old = self._cells.get(key)
                if old is None:
                    self.add_row(*self._shown(cells), key=key)
                    structural = True
                else:
                    for column in self._column_keys:
                        i = index[column]
                        if old[i] != signature[i]:
                            self.update_cell(key, column, _gap(cells[i]), update_width=True)
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
            i = [k for k, _ in self._columns].index(column)
            self._rows[key][i] = cell
            self._cells[key][i] = _signature(cell)
            if column in self._column_keys:
                self.update_cell(key, column, _gap(cell), update_width=True)

    def move_to(self, key: str) -> None:
        """Put the cursor on the row with this key, if there is one."""
        if key in self._cells or key in self._rows:
            self.move_cursor(row=self.get_row_index(key))
