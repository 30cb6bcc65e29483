"""A compact results table for the compare view: one experiment's models and ensembles with
a score column per task and the overall, best values marked as in the report (bold and ▲).

The full table (with statuses and notes) is powerbert.results.report.render_table; this one drops
both so that two or three experiments fit side by side.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from powerbert.results.report import BEST, ReportData, best_rows, columns


def compact_table(report: ReportData) -> Table:
    best = best_rows(report)
    table = Table(title=report.experiment, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=False)
    table.add_column("model / ensemble", no_wrap=True)
    for key, header in columns(report):
        table.add_column(key if key == "overall" else header.split()[0], justify="right", no_wrap=True)
    for i, row in enumerate(report.rows):
        if i and row.kind == "ensemble" and report.rows[i - 1].kind == "model":
            table.add_section()
        cells = []
        for key, _ in columns(report):
            value = row.overall if key == "overall" else row.scores.get(key)
            if value is None:
                cells.append(Text("—  ", style="dim"))
            elif row.name in best[key]:
                cells.append(Text(f"{value:.3f} {BEST}", style="bold"))
            else:
                cells.append(Text(f"{value:.3f}  "))
        name_style = "italic" if row.kind == "ensemble" else ("" if row.status == "finished" else "dim")
        table.add_row(Text(row.name, style=name_style), *cells)
    return table
