"""What the Ray backend costs: the same run through the local backend and through a Ray
cluster, interleaved, comparing training throughput (steps per second between the first and
the last training step, from runs.db's metric times) and the time from `powerbert run` to the
run's first step.

    python bench/ray_overhead.py                 # 3 pairs, sst on the real data (or the demo's)
    python bench/ray_overhead.py --pairs 5 --max-train 960

The cluster is one node started here (`ray start --head --num-cpus N`, N = this machine's
cores) inside a network namespace with only loopback in it (the script re-runs itself under
`unshare --net`; it needs root), with usage stats off and a temp folder of its own, stopped at
the end. Both sides train with every core: the local worker with POWERBERT_THREADS = cores,
the Ray run with --ray-cpus-per-run = cores. Target: throughput ratio (Ray / local) >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_DIR, ROOT, cpu_model

TARGET = 0.95
INSIDE = "POWERBERT_BENCH_IN_NAMESPACE"


def one_run(backend: str, folder: Path, args, env: dict) -> tuple[float, float]:
    """Run the experiment once; (training steps per second, seconds from `run` to the first step)."""
    db = folder / f"{backend}-{time.monotonic_ns()}.db"
    data = ["--data-dir", str(DATA_DIR), "--skip-bad-rows"] if DATA_DIR.is_dir() else []
    cores = str(os.cpu_count() or 1)
    side = ["--backend", "ray", "--ray-gpus-per-run", "0", "--ray-cpus-per-run", cores] if backend == "ray" else []
    command = [sys.executable, "-m", "powerbert", "run", *data, "--subsets", "sst", "--epochs", "1", "--max-train", str(args.max_train),
               "--yes", "--detach", "--db", str(db), "--out", str(folder / "runs"), *side]
    started = time.time()
    done = subprocess.run(command, env={**env, "POWERBERT_THREADS": cores}, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{backend}: powerbert run failed:\n{done.stdout}\n{done.stderr}")
    name = re.search(r"experiment (\S+):", done.stdout).group(1)
    conn = sqlite3.connect(db, timeout=30)
    deadline = time.monotonic() + 900
    while conn.execute("SELECT status FROM experiments WHERE name = ?", (name,)).fetchone()[0] not in ("finished", "failed", "stopped"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{backend}: the experiment did not end within 15 minutes")
        time.sleep(0.5)
    status, error = conn.execute("SELECT status, error FROM runs").fetchone()
    if status != "finished":
        raise SystemExit(f"{backend}: the run ended {status}: {error}")
    times = [row[0] for row in conn.execute("SELECT time FROM metrics WHERE split = 'train' AND name = 'loss' ORDER BY step")]
    conn.close()
    steps_per_s = (len(times) - 1) / (times[-1] - times[0])
    return steps_per_s, times[0] - started


def inside(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="pbbench-", dir="/tmp"))
    (tmp / "home").mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp), "RAY_ADDRESS": "127.0.0.1:6379",
           "HOME": str(tmp / "home"), "POWERBERT_CACHE": str(Path.home() / ".cache" / "powerbert")}
    ray = shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "ray"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rows = []
    try:
        subprocess.run([ray, "start", "--head", "--port", "6379", "--num-cpus", str(os.cpu_count() or 1), "--include-dashboard=false",
                        "--disable-usage-stats", "--temp-dir", str(tmp)], env=env, check=True, capture_output=True, timeout=180)
        one_run("local", tmp, args, env)  # warm: the calibration cache, the model files in the page cache
        for pair in range(args.pairs):
            order = ("local", "ray") if pair % 2 == 0 else ("ray", "local")
            result = {backend: one_run(backend, tmp, args, env) for backend in order}
            rows.append(result)
            print(f"   pair {pair + 1}: local {result['local'][0]:.3f} steps/s, first step after {result['local'][1]:.1f} s; "
                  f"ray {result['ray'][0]:.3f} steps/s, first step after {result['ray'][1]:.1f} s", flush=True)
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    local = statistics.median(r["local"][0] for r in rows)
    remote = statistics.median(r["ray"][0] for r in rows)
    first_local = statistics.median(r["local"][1] for r in rows)
    first_ray = statistics.median(r["ray"][1] for r in rows)
    print(f"-- medians of {len(rows)} pairs: local {local:.3f} steps/s, ray {remote:.3f} steps/s; "
          f"first step after {first_local:.1f} s (local) and {first_ray:.1f} s (ray)")
    print(json.dumps({"local_steps_per_s": local, "ray_steps_per_s": remote, "first_step_local_s": first_local, "first_step_ray_s": first_ray}))
    ratio = remote / local
    print(f"RATIO training throughput ray/local: {ratio:.3f}x (target >= {TARGET}) {'MET' if ratio >= TARGET else 'MISSED'}")
    return 0 if ratio >= TARGET else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="local/Ray pairs, interleaved (default 3)")
    parser.add_argument("--max-train", type=int, default=640, help="sst training rows of the run (default 640: 40 steps)")
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        return inside(args)
    print(f"== Ray backend overhead: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}, {'real data' if DATA_DIR.is_dir() else 'demo data'}", flush=True)
    # Ray must not see this machine's network (it binds to its address and asks a public DNS
    # server for it): the measurement runs in a namespace with loopback only.
    command = ["unshare", "--net", sys.executable, str(Path(__file__).resolve()), "--pairs", str(args.pairs), "--max-train", str(args.max_train)]
    return subprocess.run(command, env={**os.environ, INSIDE: "1", "PYTHONPATH": str(ROOT)}).returncode


if __name__ == "__main__":
    sys.exit(main())
