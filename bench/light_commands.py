"""How long the light commands take as a whole process: `powerbert stop` and `status` on a
finished demo experiment, this checkout against an older one, interleaved.

    git worktree add /tmp/powerbert-before <commit>
    python bench/light_commands.py --before /tmp/powerbert-before

Each side runs `python -m powerbert COMMAND` with PYTHONPATH at its checkout, so the only
difference is the code imported. The demo experiment is trained once with this checkout
(a few CPU minutes) and kept under $POWERBERT_BENCH_CACHE; both sides read the same experiment
(the older checkout a copy of runs.db at the schema it knows), and `stop` on a finished
experiment changes nothing. Prints each command's median wall time per
side and the ratio; the target is this checkout's `stop` and `status` under 0.4 s each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import CACHE_DIR, ROOT, cpu_model, interleaved, median, spread

TARGET_S = 0.4
EXPERIMENT = "light-demo"


def demo_db() -> Path:
    """A finished demo experiment (the built-in data, seven runs), trained once and cached."""
    folder = CACHE_DIR / "light-commands"
    db = folder / "runs.db"
    if db.exists():
        return db
    folder.mkdir(parents=True, exist_ok=True)
    print(f"   training the demo experiment once into {folder} (a few minutes)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "powerbert", "run", "--name", EXPERIMENT, "--db", str(db), "--out", str(folder / "runs")],
        check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
    )
    return db


def schema_1_copy(db: Path) -> Path:
    """The same experiment as an older checkout reads it: runs.db at schema 1 (before the
    runs.earlier_elapsed column of migration 2), beside the original."""
    import shutil
    import sqlite3

    old = db.with_name("runs-schema1.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{old}{suffix}").unlink(missing_ok=True)
    source = sqlite3.connect(db)
    target = sqlite3.connect(old)
    source.backup(target)
    source.close()
    columns = [r[1] for r in target.execute("PRAGMA table_info(runs)")]
    if "earlier_elapsed" in columns:
        target.execute("ALTER TABLE runs DROP COLUMN earlier_elapsed")
        target.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_earlier_elapsed'")
        target.execute("PRAGMA user_version = 1")
        target.commit()
    target.close()
    shutil.copymode(db, old)
    return old


def timed_command(checkout: Path, args: list[str]):
    env = {**os.environ, "PYTHONPATH": str(checkout)}

    def run() -> float:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "powerbert", *args], cwd=checkout, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{checkout}: powerbert {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
        return elapsed

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="an older checkout of the repository (e.g. a git worktree)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    db = demo_db()
    load = os.getloadavg()[0]
    print(f"== light commands: {cpu_model()}, {os.cpu_count()} cores, load {load:.1f}, python {sys.version.split()[0]}")
    missed = 0
    old_db = schema_1_copy(db)
    for command in (["stop", EXPERIMENT], ["status", EXPERIMENT], ["list"]):
        before_side = timed_command(args.before.resolve(), [*command, "--db", str(old_db)])
        after_side = timed_command(ROOT, [*command, "--db", str(db)])
        times = interleaved({"before": before_side, "after": after_side}, args.repeats)
        before, after = median(times["before"]), median(times["after"])
        print(f"   powerbert {command[0]:6s}  before {before:.3f} s ({spread(times['before'])})  "
              f"after {after:.3f} s ({spread(times['after'])})  after/before {after / before:.2f}x")
        if command[0] in ("stop", "status") and after >= TARGET_S:
            missed += 1
    print(f"RESULT stop and status under {TARGET_S} s: {'MET' if not missed else 'MISSED'}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
