"""Helpers shared by the benchmarks: interleaved timing, medians, the machine, the verdict.

Every benchmark measures PowerBERT and a plain reference in the same process, interleaved
(A B A B ...), and reports the ratio of the medians: on a shared, noisy machine the absolute
figures drift, the ratio much less. Each prints its ratio on the last line and exits 1 when the
target is missed, so `python bench/X.py && echo ok` is a check.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere: import the checkout
    sys.path.insert(0, str(ROOT))

# The CS224N task files: ../shared/data/cs224n beside the checkout, or $POWERBERT_BENCH_DATA (a
# checkout elsewhere, a frozen copy of the code for a long run).
DATA_DIR = Path(os.environ.get("POWERBERT_BENCH_DATA", ROOT.parent / "shared" / "data" / "cs224n"))
CACHE_DIR = Path(os.environ.get("POWERBERT_BENCH_CACHE", Path.home() / ".cache" / "powerbert-bench"))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown cpu"


def machine() -> str:
    """One line: CPU, cores, load, torch and its threads."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu_model()}, {os.cpu_count()} cores, load {load:.1f}, python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def trimmed_data(folder: Path, rows: int | None = 200, train_rows: int | None = None, seed: int = 0) -> Path:
    """The CS224N files cut to their first `rows` rows (None: whole), and the training files, if
    `train_rows` is given, to that many rows drawn at random (seeded, kept in file order): the
    same rows for every side of a benchmark. A random draw, because ids-sst-train.csv is ordered
    by label (its first 4,000 rows are almost all positive): a model trained on its first rows
    scores at chance on dev. (quora-train's malformed row is past its first 200.)"""
    import random

    sources = sorted(DATA_DIR.glob("*.csv"))
    if not sources:
        sys.exit(f"{DATA_DIR}: no CS224N task files (*.csv) there; set POWERBERT_BENCH_DATA to their folder")
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        with open(src, encoding="utf-8") as f:
            header, *lines = f.readlines()
        # Whole records: a record starts at a line that starts with a row number and a tab.
        records: list[list[str]] = []
        for line in lines:
            if line.split("\t", 1)[0].isdigit() or not records:
                records.append([])
            records[-1].append(line)
        if train_rows is not None and src.name.endswith("-train.csv"):
            picked = sorted(random.Random(seed).sample(range(len(records)), min(train_rows, len(records))))
            records = [records[i] for i in picked]
        elif rows is not None:
            records = records[:rows]
        (folder / src.name).write_text(header + "".join(line for record in records for line in record), encoding="utf-8")
    return folder


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   {datetime.datetime.now().isoformat(timespec='seconds')}  {machine()}", flush=True)


def interleaved(sides: dict[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Run each side once per round, `repeats` rounds, alternating which goes first.

    A side returns the figure it measured (seconds, say), or None to have its wall time used.
    """
    results: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            value = sides[name]()
            results[name].append(time.perf_counter() - start if value is None else value)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """min..max as a short string, to show the noise next to a median."""
    return f"{min(values):.4g}..{max(values):.4g}"


def verdict(label: str, ratio: float, target: float, *, at_least: bool) -> int:
    """Print the ratio (last line of a benchmark) and return the exit code: 0 met, 1 missed."""
    met = ratio >= target if at_least else ratio <= target
    sign = ">=" if at_least else "<="
    print(f"RATIO {label}: {ratio:.3f}x (target {sign} {target:g}x) {'MET' if met else 'MISSED'}", flush=True)
    return 0 if met else 1
