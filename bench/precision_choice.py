"""Does `precision = "auto"` pick the faster precision on this machine?

    python bench/precision_choice.py                  # SST, 2 threads, 5 rounds
    python bench/precision_choice.py --threads 1 --rounds 5

The product's own `TrainStep` (MiniLM, the default settings, SST batches of 16 real rows, the
first rounds' steps not counted) at each precision setting: "auto", "bf16" and "fp32". The same
batches go through each, the settings take turns round by round (A B C, C B A, ...). Prints the
median time a step of each and what "auto" resolved to. Where the device has no bf16 matmul
kernel (a CPU without AVX-512) torch falls back to plain loops and bf16 is many times slower
than fp32; where it has one, bf16 is the faster. Target: auto's step no slower than the faster
of the two fixed settings by more than 10%.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import common
import torch

from powerbert.config import TrainConfig
from powerbert.data.batching import encode_task
from powerbert.model.device import batch_width_multiple, resolve_precision, tune_cpu_runtime
from powerbert.model.multitask import build_model, load_tokenizer
from powerbert.model.surgery import make_combiner
from powerbert.training.step import TrainStep, make_optimizer
from powerbert.training.streams import load_training_data

SETTINGS = ("auto", "bf16", "fp32")
TARGET = 1.10
BATCHES = 4  # steps a round: each setting steps through the same four batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of four steps per setting; the first is warm-up")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds: expected at least 2 (the first is not counted)")
    torch.set_num_threads(args.threads)
    tune_cpu_runtime()
    device = torch.device("cpu")
    common.header(f"precision settings, TrainStep on SST, batch 16, {args.threads} threads, {args.rounds} rounds")

    base = TrainConfig(data_dir=str(common.DATA_DIR), tasks=("sst",), max_train=BATCHES * 16, batch_size=16)
    data = load_training_data(base, "train", lambda _: None)["sst"]
    encoded = encode_task(data, load_tokenizer(base.model), pair_mode=base.heads.pair_mode("sst"), max_length=base.max_length)
    batches = {}  # the same rows for every setting, padded as a run at that precision pads them
    for precision in ("bf16", "fp32"):
        encoded.pad_multiple = batch_width_multiple(device, precision)
        batches[precision] = [encoded.collate(list(range(i * 16, i * 16 + 16))) for i in range(BATCHES)]
    steps = {}
    for setting in SETTINGS:
        config = replace(base, precision=setting)
        model = build_model(config.model, config.tasks, config.heads).train()
        steps[setting] = TrainStep(model, make_optimizer(model, config), make_combiner(config.surgery, config.seed, config.balance), config, device)

    def side(setting: str):
        step, padded = steps[setting], batches[resolve_precision(setting, device)]

        def run() -> None:
            for i, batch in enumerate(padded):
                step({"sst": batch}, step=i)
        return run

    rounds = common.interleaved({s: side(s) for s in SETTINGS}, args.rounds)
    per_step = {s: common.median(times[1:]) / BATCHES for s, times in rounds.items()}
    print(f"   auto resolves to {resolve_precision('auto', device)} here")
    for setting in SETTINGS:
        spread = common.spread([t / BATCHES * 1e3 for t in rounds[setting][1:]])
        print(f"   {setting:5s} {per_step[setting] * 1e3:9.0f} ms a step  ({16 / per_step[setting]:6.1f} examples/s; rounds {spread} ms)")
    faster = min(per_step["bf16"], per_step["fp32"])
    print(f"   bf16 / fp32: {per_step['bf16'] / per_step['fp32']:.2f}x the time")
    return common.verdict("auto's step / the faster fixed precision's", per_step["auto"] / faster, TARGET, at_least=False)


if __name__ == "__main__":
    sys.exit(main())
