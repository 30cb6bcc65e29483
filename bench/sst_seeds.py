"""SST dev accuracy of `powerbert train` against the plain loop (bench/sst_plain_loop.py) over
seeds, both with the plain loop's recipe: the check that PowerBERT trains as well as a plain loop.

    python bench/sst_seeds.py                       # seeds 0 1 2, the whole SST file, 2 epochs
    python bench/sst_seeds.py --seeds 0 1 --set warmup=0.1      # another setting on the PowerBERT side

For each seed the two sides run at the same time, one torch thread each, so the machine's load
falls on both. The recipe is the plain loop's: lr 5e-5, batch 16, 2 epochs over the whole
training file, AdamW weight decay 0.01, no warm-up, linear decay, max length 128. Each side's
score is its best epoch's dev accuracy (what `powerbert train` keeps). It prints a row per seed,
the means, and exits 1 when PowerBERT's mean is more than 0.5 points below the plain loop's.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

import common

RECIPE = ["--lr", "5e-5", "--batch-size", "16", "--epochs", "2"]
PRODUCT_SETTINGS = ["weight_decay=0.01", "warmup=0", "max_length=128"]
EPOCH_LINE = re.compile(r"epoch (\d+) dev: sst (0\.\d+)")


def side_commands(seed: int, data_dir: str, out: str, extra: list[str]) -> dict[str, list[str]]:
    settings = [x for s in PRODUCT_SETTINGS + extra for x in ("--set", s)]
    return {
        "plain loop": [sys.executable, str(common.ROOT / "bench" / "sst_plain_loop.py"), "--data-dir", data_dir, "--seed", str(seed), *RECIPE],
        "powerbert train": [
            sys.executable, "-m", "powerbert", "train", "--tasks", "sst", "--data-dir", data_dir, "--max-train", "0",
            "--seed", str(seed), "--out", out, *RECIPE, *settings,
        ],
    }


def run_pair(commands: dict[str, list[str]]) -> dict[str, list[float]]:
    """Both sides at once, one thread each; each side's dev accuracy after every epoch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "POWERBERT_THREADS": "1", "COLUMNS": "200"}
    procs = {name: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name, cmd in commands.items()}
    scores = {}
    for name, proc in procs.items():
        text, _ = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"{name} failed (exit {proc.returncode}):\n{text[-2000:]}")
        scores[name] = [float(m.group(2)) for m in EPOCH_LINE.finditer(text)]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(common.DATA_DIR))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE", help="another setting for the powerbert side")
    args = parser.parse_args()

    common.header(f"sst, plain loop vs powerbert train, seeds {' '.join(map(str, args.seeds))}; powerbert --set {' '.join(PRODUCT_SETTINGS + args.extra)}")
    best: dict[str, list[float]] = {"plain loop": [], "powerbert train": []}
    with tempfile.TemporaryDirectory(prefix="sst-seeds-") as tmp:
        for seed in args.seeds:
            scores = run_pair(side_commands(seed, args.data_dir, os.path.join(tmp, f"seed{seed}"), args.extra))
            for name, per_epoch in scores.items():
                best[name].append(max(per_epoch))
                print(f"   seed {seed}  {name:16s} epochs {'  '.join(f'{s:.4f}' for s in per_epoch)}  best {max(per_epoch):.4f}", flush=True)
    means = {name: statistics.mean(values) for name, values in best.items()}
    for name, mean in means.items():
        print(f"   {name:16s} mean {mean:.4f} over {len(best[name])} seeds")
    gap = means["powerbert train"] - means["plain loop"]
    if len(args.seeds) > 1:
        # Seeds are paired (same seed on both sides, though the draws differ): the spread of the
        # per-seed differences says how far the mean gap can be trusted.
        diffs = [p - q for p, q in zip(best["powerbert train"], best["plain loop"])]
        error = statistics.stdev(diffs) / len(diffs) ** 0.5
        print(f"   per-seed differences: standard deviation {statistics.stdev(diffs) * 100:.2f} points, standard error of the mean gap {error * 100:.2f}")
    met = gap >= -0.005
    print(f"RESULT sst dev accuracy, powerbert train - plain loop: {gap * 100:+.2f} points (target >= -0.50) {'MET' if met else 'MISSED'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
