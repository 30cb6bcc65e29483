"""The results report: the paper's table (models and ensembles) and its error-analysis charts.

`build_report` gathers plain data (`ReportData`) from the models' dev scores and the ensemble
outcomes; the renderers turn it into a rich table, terminal bar charts, Markdown, CSV or JSON.
No SQLite and no torch here, so `powerbert report` imports fast; the caller reads runs.db.

Best values are marked bold AND with "▲", so they survive a terminal without colour.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.columns import Columns
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from powerbert.results import DEFAULT_SCHEME
from powerbert.results.analysis import error_analysis
from powerbert.results.ensemble import CV_SCHEMES, SCHEMES, EnsembleOutcome, json_safe, scheme_overall
from powerbert.tasks import TASKS, overall_score, power_set

BEST = "▲"
DONE_STATUSES = {"done", "completed", "finished", "succeeded"}  # any other status is named
METRIC_LABEL = {"accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman"}


@dataclass
class ReportRow:
    name: str  # subset name for a model ('sst+para'), scheme name for an ensemble
    kind: str  # "model" or "ensemble"
    status: str  # run status for a model; how the score was measured for an ensemble
    scores: dict[str, float | None]  # task -> dev score (None: not trained on it / can't run)
    overall: float | None  # None unless every task of the experiment has a score
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> member -> w
    missing: dict[str, list[str]] = field(default_factory=dict)  # task -> absent members
    notes: list[str] = field(default_factory=list)
    in_sample: dict[str, float] = field(default_factory=dict)  # CV schemes: optimistic score


@dataclass
class ReportData:
    experiment: str
    tasks: tuple[str, ...]
    rows: list[ReportRow]  # models first (power-set order), then ensembles (SCHEMES order)
    analysis_scheme: str  # the ensemble whose errors `analysis` describes
    analysis: dict[str, dict]  # task -> error_analysis(...) result
    subsets: list[str] = field(default_factory=list)  # the subsets the experiment trains (none known: all)


def build_report(
    experiment_name: str,
    tasks: tuple[str, ...],
    model_scores: dict[str, dict[str, float]],
    model_status: dict[str, str],
    outcomes: list[EnsembleOutcome],
    analysis_scheme: str = DEFAULT_SCHEME,
    *,
    gold: dict[str, np.ndarray] | None = None,
) -> ReportData:
    """Collect the table and the error analysis of `analysis_scheme`'s combined dev outputs.

    Gold labels come from each outcome (`EnsembleOutcome.gold`), or from `gold` (task -> array)
    when given. A model's overall is shown only when it has a score on every task.
    """
    tasks = tuple(tasks)
    rank = {"+".join(s): i for i, s in enumerate(power_set(tasks))}
    names = sorted(set(model_scores) | set(model_status), key=lambda n: (rank.get(n, len(rank)), n))
    rows = []
    for name in names:
        scores = {t: _clean(model_scores.get(name, {}).get(t)) for t in tasks}
        full = all(v is not None for v in scores.values())
        rows.append(
            ReportRow(name, "model", model_status.get(name, "unknown"), scores,
                      overall_score(scores) if full else None)
        )
    overall = scheme_overall([o for o in outcomes if o.task in tasks])
    present = [s for s in SCHEMES if any(o.scheme == s for o in outcomes)]
    present += sorted({o.scheme for o in outcomes} - set(SCHEMES))
    for scheme in present:
        mine = {o.task: o for o in outcomes if o.scheme == scheme and o.task in tasks}
        row = ReportRow(scheme, "ensemble", "dev", {t: None for t in tasks}, overall.get(scheme))
        for task, o in mine.items():
            row.scores[task] = _clean(o.score)
            row.weights[task] = {m: float(w) for m, w in o.weights.items()}
            if o.missing:
                row.missing[task] = list(o.missing)
            if "cv" in o.details:
                row.status = f"{o.details['cv']['folds']}-fold CV"
            if "in_sample_score" in o.details:
                row.in_sample[task] = float(o.details["in_sample_score"])
            if o.details.get("note"):
                row.notes.append(f"{task}: {o.details['note']}")
        rows.append(row)

    analysis = {}
    for o in outcomes:
        if o.scheme != analysis_scheme or o.task not in tasks or o.outputs is None:
            continue
        labels = (gold or {}).get(o.task, o.gold)
        if labels is not None:
            analysis[o.task] = error_analysis(o.task, TASKS[o.task].predictions(o.outputs), labels)
    return ReportData(experiment_name, tasks, rows, analysis_scheme, analysis)


def _clean(value) -> float | None:
    """A score as a float, or None for absent and NaN (no score is not a zero score)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def columns(report: ReportData) -> list[tuple[str, str]]:
    """(key, header) for the score columns: one per task, then overall."""
    cols = [(t, f"{t} {METRIC_LABEL[TASKS[t].metric]}") for t in report.tasks]
    return cols + [("overall", "overall")]


def _value(row: ReportRow, key: str) -> float | None:
    return row.overall if key == "overall" else row.scores.get(key)


def best_rows(report: ReportData) -> dict[str, set[str]]:
    """Column key -> names of the rows holding its best value (all of them on a tie)."""
    best = {}
    for key, _ in columns(report):
        values = {r.name: _value(r, key) for r in report.rows if _value(r, key) is not None}
        top = max(values.values(), default=None)
        best[key] = {n for n, v in values.items() if top is not None and v >= top - 1e-12}
    return best


def notes(report: ReportData) -> list[str]:
    """The lines under the table: failed runs, missing members, learned weights, honesty."""
    lines = []
    every = len(power_set(report.tasks))
    if report.subsets and len(report.subsets) < every:  # said only when it is not the whole power set
        lines.append(f"subsets: {', '.join(report.subsets)} ({len(report.subsets)} of {every})")
    failed = [f"{r.name} ({r.status})" for r in report.rows
              if r.kind == "model" and r.status.lower() not in DONE_STATUSES]
    if failed:
        lines.append("Runs not done: " + ", ".join(failed))
    missing: dict[str, set[str]] = {}
    for r in report.rows:
        for task, names in r.missing.items():
            missing.setdefault(task, set()).update(names)
    for task in report.tasks:
        if missing.get(task):
            lines.append(f"Missing from the {task} ensembles: " + ", ".join(sorted(missing[task])))
    for r in report.rows:
        lines.extend(f"{r.name} {note}" for note in r.notes)
        if r.kind == "ensemble" and r.name in CV_SCHEMES:
            for task, weights in r.weights.items():
                shown = ", ".join(f"{m} {w:.2f}" for m, w in sorted(weights.items(), key=lambda i: -i[1]))
                cv, fit = _fmt(r.scores.get(task)), _fmt(r.in_sample.get(task))
                lines.append(f"{r.name} weights, {task}: {shown} (CV {cv}; in-sample {fit}, not used)")
    lines.append(f"{BEST} best in column. Learned scores are cross-validated (weights fit on the "
                 "other folds only; prediction uses weights fit on all of dev); weighted takes its "
                 "weights from the same dev scores it is judged on, as in the paper.")
    return lines


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render_table(report: ReportData) -> Group:
    """The paper's table as a rich renderable, with the notes under it."""
    best = best_rows(report)
    table = Table(title=f"PowerBERT · {report.experiment} · dev", title_justify="left")
    table.add_column("model / ensemble")
    table.add_column("status")
    for _, header in columns(report):
        table.add_column(header, justify="right")
    for i, row in enumerate(report.rows):
        if i and row.kind == "ensemble" and report.rows[i - 1].kind == "model":
            table.add_section()
        cells = []
        for key, _ in columns(report):
            value = _value(row, key)
            if value is not None and row.name in best[key]:
                cells.append(Text(f"{_fmt(value)} {BEST}", style="bold"))
            else:
                cells.append(Text(f"{_fmt(value)}  "))  # pad so digits align with marked cells
        name = Text(row.name, style="italic" if row.kind == "ensemble" else "")
        table.add_row(name, row.status, *cells)
    return Group(table, *(Text(line, style="dim") for line in notes(report)))


def _bar(value: int, top: int, width: int = 30) -> str:
    """A unicode bar with eighth-cell resolution, so small counts still show."""
    if top <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / top * width * 8))
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def _bar_grid(rows: list[tuple[str, str, int, str]], top: int) -> Table:
    """One grid for a whole chart, so every bar starts in the same column.

    rows: (group label, bar label, count, mark) -- group label shown on a group's first row.
    """
    grid = Table.grid(padding=(0, 1))
    for justify in ("left", "right", "left", "right", "left"):
        grid.add_column(justify=justify)
    for group, label, count, mark in rows:
        grid.add_row(group, label, Text(_bar(count, top), style="cyan"), str(count), mark)
    return grid


def render_charts(report: ReportData) -> Columns:
    """Per task: the (predicted - gold) distribution and gold x predicted grouped bars."""
    panels = []
    for task in report.tasks:
        data = report.analysis.get(task)
        if data is None:
            continue
        diff, conf = data["difference"], data["confusion"]
        diff_rows = [("", label, count, "") for label, count in zip(diff["labels"], diff["counts"])]
        conf_rows = [
            (f"gold {g}" if j == 0 else "", f"→ {p}", count, "✓" if p == g else "")
            for g, row in zip(conf["labels"], conf["counts"])
            for j, (p, count) in enumerate(zip(conf["labels"], row))
        ]
        summary = ", ".join(f"{k} {_fmt(v) if isinstance(v, float) else v}"
                            for k, v in data["summary"].items())
        body = Group(
            Text(summary, style="dim"),
            Text(diff["title"], style="bold"),
            _bar_grid(diff_rows, max(diff["counts"], default=0)),
            Text("gold × predicted (✓ = right)", style="bold"),
            _bar_grid(conf_rows, max((c for _, _, c, _ in conf_rows), default=0)),
        )
        title = f"{task} · {report.analysis_scheme} ensemble · n={data['n']}"
        panels.append(Panel(body, title=title, title_align="left", expand=False))
    if not panels:
        panels.append(Text(f"No error analysis: the {report.analysis_scheme} ensemble has no outputs."))
    # side by side where the terminal is wide enough, stacked where it is not
    return Columns(panels)


def to_markdown(report: ReportData) -> str:
    """The table as GitHub Markdown; best values bold and marked, notes as a list under it."""
    best = best_rows(report)
    cols = columns(report)
    lines = [f"## PowerBERT · {report.experiment} · dev", "",
             "| model / ensemble | status | " + " | ".join(h for _, h in cols) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for row in report.rows:
        cells = []
        for key, _ in cols:
            value = _value(row, key)
            marked = value is not None and row.name in best[key]
            cells.append(f"**{_fmt(value)}** {BEST}" if marked else _fmt(value))
        name = f"*{row.name}*" if row.kind == "ensemble" else row.name
        lines.append(f"| {name} | {row.status} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- {line}" for line in notes(report))
    return "\n".join(lines) + "\n"


def to_csv(report: ReportData) -> str:
    """The table as CSV, full precision; an empty cell is no score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols = columns(report)
    writer.writerow(["name", "kind", "status", *(key for key, _ in cols)])
    for row in report.rows:
        values = [_value(row, key) for key, _ in cols]
        writer.writerow([row.name, row.kind, row.status, *("" if v is None else repr(v) for v in values)])
    return buffer.getvalue()


def to_json(report: ReportData) -> str:
    """Table, weights, notes and analysis as JSON; NaN and infinities become null."""
    best = best_rows(report)
    payload = {
        "experiment": report.experiment,
        "tasks": list(report.tasks),
        "columns": [{"key": k, "header": h} for k, h in columns(report)],
        "rows": [asdict(r) for r in report.rows],
        "best": {k: sorted(v) for k, v in best.items()},
        "notes": notes(report),
        "analysis_scheme": report.analysis_scheme,
        "analysis": report.analysis,
    }
    return json.dumps(json_safe(payload), indent=2, allow_nan=False, ensure_ascii=False)

