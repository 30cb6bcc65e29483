"""Benchmark 2: the cost of gradient surgery: a three-task step with PCGrad against the sum.

    python bench/pcgrad_overhead.py            # ~2-3 minutes on 2 cores
    python bench/pcgrad_overhead.py --steps 8 --repeats 5 --threads 2

One process, one MiniLM MultitaskBert with the sst, para and sts heads, tuned as train_subset
tunes a CPU process. Two `powerbert.training.loop.TrainStep`s share the model and optimizer and differ
only in the gradient combiner: `pcgrad` (one backward per task into a [T, P] buffer, the
projections from the T x T Gram matrix, one combination) and `sum` (one backward of the summed
losses). They take turns on the very same batches (one batch of each task per step, from the
real CS224N train files), alternating which goes first.

Reported: the median step time of each, their ratio (target <= 1.10x), the median of the
step-by-step paired ratios, and the projection alone (Gram matrix + combination) timed apart.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import common

TARGET = 1.10
TASKS = ("sst", "para", "sts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="distinct three-task batches per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over those batches")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine a second thread makes steps vary 10x; 0 = torch's own)")
    args = parser.parse_args(argv)

    import torch

    from powerbert.config import TrainConfig
    from powerbert.data.batching import encode_task
    from powerbert.data.files import load_split
    from powerbert.model.device import tune_cpu_runtime
    from powerbert.model.multitask import build_model, load_tokenizer
    from powerbert.model.surgery import PCGrad, SumGradients, conflict_weights
    from powerbert.training.step import TrainStep, make_optimizer
    from powerbert.training.streams import TaskStream

    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_runtime()
    common.header("bench 2: PCGrad overhead, three-task step with PCGrad vs summed losses")
    config = TrainConfig(tasks=TASKS, batch_size=args.batch_size, skip_bad_rows=True)
    tokenizer = load_tokenizer(config.model)
    streams = {}
    for task in TASKS:
        data = load_split(task, common.DATA_DIR, "train", skip_bad_rows=True)
        encoded = encode_task(data, tokenizer, pair_mode=config.heads.pair_mode(task), max_length=config.max_length)
        streams[task] = TaskStream(encoded, config.batch_size, config.seed, None)
    batches = [{t: s.batch(k) for t, s in streams.items()} for k in range(args.steps)]
    torch.manual_seed(0)
    model = build_model(config.model, config.tasks, config.heads).train()
    optimizer = make_optimizer(model, config)
    device = torch.device("cpu")
    pcgrad = PCGrad(config.seed)
    steps = {
        "pcgrad": TrainStep(model, optimizer, pcgrad, config, device),
        "sum": TrainStep(model, optimizer, SumGradients(), config, device),
    }
    shared = sum(p.numel() for p in model.shared_parameters())
    print(f"   {shared:,} shared parameters; {args.steps} batches x {args.repeats} rounds; "
          f"tokens per step {sum(b.a['input_ids'].numel() + (b.b['input_ids'].numel() if b.b else 0) for b in batches[0].values())}",
          flush=True)

    def run(name: str, k: int, step: int) -> float:
        start = time.perf_counter()
        losses = steps[name](batches[k], step)
        {n: float(v) for n, v in losses.items()}
        return time.perf_counter() - start

    for name in steps:  # warm-up: first-call costs, the PCGrad buffers, the optimizer state
        run(name, 0, 0)
    times: dict[str, list[float]] = {name: [] for name in steps}
    paired = []
    step = 1
    for r in range(args.repeats):
        for k in range(args.steps):
            order = list(steps) if (r + k) % 2 == 0 else list(steps)[::-1]
            got = {name: run(name, k, step) for name in order}
            step += 1
            for name, seconds in got.items():
                times[name].append(seconds)
            paired.append(got["pcgrad"] / got["sum"])

    ids = [x["input_ids"].reshape(-1) for b in batches[0].values() for x in (b.a, b.b) if x is not None]
    table = model.encoder.get_input_embeddings().weight
    size = shared - table.numel() + torch.unique(torch.cat(ids)).numel() * table.shape[1]
    grads = torch.randn(len(TASKS), size)
    combined = torch.empty(size)
    projection = []
    for i in range(7):
        start = time.perf_counter()
        weights, _ = conflict_weights(grads, random.Random(i))
        torch.mv(grads.T, weights.float(), out=combined)
        projection.append(time.perf_counter() - start)

    for name, values in times.items():
        print(f"   {name:<7} {common.median(values):7.3f} s/step  (steps {common.spread(values)})", flush=True)
    print(f"   projection alone (Gram matrix + combination of {len(TASKS)} x {size:,}, the touched embedding rows only): "
          f"{1000 * common.median(projection[1:]):.1f} ms; conflicts projected so far {pcgrad.conflicts}")
    print(f"   median of step-by-step ratios {common.median(paired):.3f}x")
    ratio = common.median(times["pcgrad"]) / common.median(times["sum"])
    return common.verdict("step time, PCGrad / sum", ratio, TARGET, at_least=False)


if __name__ == "__main__":
    sys.exit(main())
