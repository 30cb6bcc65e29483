"""The playground's answer for one task as a rich table: one row per model, then one per
ensemble scheme, each with its output and a bar: for sst the class, its probability and a
one-cell-per-class distribution; for para the paraphrase probability; for sts the score."""

from __future__ import annotations

import numpy as np
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from powerbert.tasks import TASKS

SPARK = "▁▂▃▄▅▆▇█"


def bar(share: float, width: int = 12, style: str = "cyan") -> Text:
    """A horizontal bar for a share in 0..1, with eighth-cell resolution."""
    share = min(1.0, max(0.0, float(share)))
    eighths = round(share * width * 8)
    text = "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
    return Text(text.ljust(width), style=style)


def spark(probabilities: np.ndarray) -> Text:
    """One cell per class, its height the class probability: the whole distribution at a glance."""
    return Text("".join(SPARK[min(7, int(p * 8))] for p in probabilities), style="magenta")


def output_cells(task: str, outputs: np.ndarray) -> tuple[Text, Text, Text, Text]:
    """(answer, number, bar, distribution) for one source's output on the single input."""
    spec = TASKS[task]
    value = np.asarray(outputs, dtype=np.float64)[0]
    if spec.kind == "classify":
        probs = np.exp(value - value.max())
        probs /= probs.sum()
        k = int(probs.argmax())
        return Text(f"{k} {spec.label_name(k)}"), Text(f"{probs[k]:.2f}"), bar(probs[k]), spark(probs)
    if spec.kind == "binary":
        p = float(1 / (1 + np.exp(-value)))
        return Text(spec.label_name(int(p > 0.5))), Text(f"{p:.2f}"), bar(p), Text("")
    score = float(np.clip(value, spec.label_min, spec.label_max))
    return Text(f"{score:.2f} / {spec.label_max:g}"), Text(""), bar(score / spec.label_max), Text("")


def prediction_view(prediction) -> Group:
    """A TaskPrediction (powerbert.inference.predict) as a titled table plus its notices."""
    task = prediction.task
    table = Table(title=f"{task} · {TASKS[task].title}", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    kind = TASKS[task].kind
    table.add_column("model / ensemble", no_wrap=True)
    table.add_column("answer", no_wrap=True)
    table.add_column({"classify": "p", "binary": "p(para)", "regress": ""}[kind], no_wrap=True, justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("classes" if kind == "classify" else "", no_wrap=True)
    for name, outputs in prediction.members.items():
        table.add_row(Text(name), *output_cells(task, outputs))
    if prediction.ensembles:
        table.add_section()
    for scheme, outputs in prediction.ensembles.items():
        table.add_row(Text(scheme, style="italic bold"), *output_cells(task, outputs))
    notes = [Text(line, style="yellow") for line in prediction.notices]
    if kind == "classify":
        names = TASKS[task].label_names
        span = f"{names[0]} → {names[-1]}" if names else "0 → last"
        notes.insert(0, Text(f"classes: the probability of each class, {span}; p: of the answer", style="dim"))
    if prediction.missing:
        notes.append(Text(f"{task}: not used (did not finish or cannot load): {', '.join(prediction.missing)}", style="dim"))
    return Group(table, *notes, Text(""))
