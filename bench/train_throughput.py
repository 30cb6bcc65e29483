"""Benchmark 1: training throughput of PowerBERT's step path against a course-style naive loop.

    python bench/train_throughput.py             # sst and sts, ~3-5 minutes on 2 busy cores
    python bench/train_throughput.py --levers    # also each lever on its own (longer)

Both sides train the default MiniLM BERT on the same rows of the real CS224N train files
(../shared/data/cs224n), one pass over them per round:

  reference  the way the course starter code does it: rows shuffled, each batch tokenised on
             the fly and padded to its longest row, fp32, eager; sts embeds each sentence of a
             pair with its own forward pass; torch's default AdamW; a process left as it starts.
  powerbert  the product's path: the process tuned as train_subset tunes it, rows tokenised
             once (powerbert.data.batching.encode_task), a length-bucketed TaskStream, and
             powerbert.training.loop.TrainStep (the default precision: bf16 where the device
             has fast bf16 matmuls, and then on a CPU the passes on a bf16 copy of the encoder;
             packed dropout masks on a CPU; the gradient combiner, clipping, fused AdamW) with
             the product's default TrainConfig.

Each side lives in its own process (bench/sides.py) and they take turns batch by batch, so
load from elsewhere on the machine falls on both alike. A side's time for a round is its
batches' steps plus, for PowerBERT, the up-front tokenising (as if every round were a new run).
Reported: examples per second of each (median over rounds) and their ratio, per task.
Target: PowerBERT >= 2.0x the reference on sst (single sentences) and sts (pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import common
import numpy as np

TARGET = 2.0
BATCH = 32  # the product's default batch size


def sample_rows(task: str, rows: int, seed: int):
    from powerbert.data.files import load_split

    data = load_split(task, common.DATA_DIR, "train")
    pick = np.random.default_rng(seed).choice(len(data.examples), rows, replace=False)
    return dataclasses.replace(data, examples=[data.examples[i] for i in sorted(pick)])


class ReferenceSide:
    """The course starter code's loop: BERT + a linear head on the pooler output (sentiment),
    cos(u, v) * 5 of two separate forward passes (similarity), per-batch tokenising."""

    def __init__(self, task: str, rows: int, seed: int, threads: int | None = None):
        import torch
        import torch.nn.functional as F
        from torch import nn
        from transformers import AutoModel

        from powerbert.model.multitask import load_tokenizer, resolve_model_name

        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.F = torch, F
        self.data = sample_rows(task, rows, seed)
        self.tokenizer = load_tokenizer(None)
        self.bert = AutoModel.from_pretrained(resolve_model_name(None)).train()
        self.head = nn.Linear(self.bert.config.hidden_size, 5)
        self.dropout = nn.Dropout(0.1)
        self.optimizer = torch.optim.AdamW([*self.bert.parameters(), *self.head.parameters()], lr=1e-5)
        self.rng = np.random.default_rng(seed)
        self.batches: list = []

    def tokenize(self, texts):
        return self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")

    def embed(self, enc):
        return self.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output

    def begin_pass(self) -> tuple[int, float]:
        order = self.rng.permutation(len(self.data.examples))
        self.batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
        return len(self.batches), 0.0

    def step(self, k: int) -> float:
        torch, F = self.torch, self.F
        start = time.perf_counter()
        rows = [self.data.examples[i] for i in self.batches[k]]
        labels = torch.tensor([ex.label for ex in rows], dtype=torch.float32)
        if len(rows[0].texts) == 1:
            logits = self.head(self.dropout(self.embed(self.tokenize([ex.texts[0] for ex in rows]))))
            loss = F.cross_entropy(logits, labels.long())
        else:
            u = self.embed(self.tokenize([ex.texts[0] for ex in rows]))
            v = self.embed(self.tokenize([ex.texts[1] for ex in rows]))
            loss = F.mse_loss(F.cosine_similarity(u, v).abs() * 5, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        float(loss.detach())
        return time.perf_counter() - start


class PowerBertSide:
    """The product's step path; the keyword switches turn single levers the other way for --levers."""

    def __init__(self, task: str, rows: int, seed: int, threads: int | None = None, precision: str | None = None,
                 bucketing: bool = True, tuned: bool = True, fused: bool = True, attention: str | None = None,
                 embedding_update: str | None = None, train_weights: str | None = None, dropout_masks: str | None = None,
                 compile_encoder: bool = False):
        import torch

        from powerbert.config import TrainConfig, apply_overrides
        from powerbert.model.device import batch_width_multiple, resolve_precision, tune_cpu_runtime
        from powerbert.model.multitask import build_model, load_tokenizer
        from powerbert.model.surgery import make_combiner
        from powerbert.training.step import TrainStep, make_optimizer

        if threads:
            torch.set_num_threads(threads)
        if tuned:
            tune_cpu_runtime()
        torch.manual_seed(seed)
        self.data = sample_rows(task, rows, seed)
        self.tokenizer = load_tokenizer(None)
        levers = {"precision": precision, "attention": attention, "embedding_update": embedding_update,
                  "train_weights": train_weights, "dropout_masks": dropout_masks}
        # Checked as any setting is (None: the product's own choice).
        self.config = apply_overrides(TrainConfig(tasks=(task,), batch_size=BATCH, seed=seed), levers)
        # Batches as wide as a run at this precision pads them.
        cpu = torch.device("cpu")
        self.pad_multiple = batch_width_multiple(cpu, resolve_precision(self.config.precision, cpu))
        self.bucketing, self.seed = bucketing, seed
        model = build_model(self.config.model, self.config.tasks, self.config.heads)
        optimizer = make_optimizer(model, self.config)
        if not fused:  # the same groups and settings, torch's default implementation
            optimizer = type(optimizer)([{k: v for k, v in g.items() if k != "fused"} for g in optimizer.param_groups])
        self.step_fn = TrainStep(model, optimizer, make_combiner(self.config.surgery, seed), self.config, torch.device("cpu"))
        if compile_encoder:  # the encoder the passes run on (a bf16 copy, with bf16 passes)
            self.step_fn.net.encoder.compile(dynamic=True)
        model.train()
        self.passes, self.global_step = 0, 0
        self.batches: list = []

    def begin_pass(self) -> tuple[int, float]:
        from powerbert.data.batching import encode_task
        from powerbert.training.streams import TaskStream

        start = time.perf_counter()
        name = self.data.task.name
        encoded = encode_task(self.data, self.tokenizer, pair_mode=self.config.heads.pair_mode(name),
                              max_length=self.config.max_length, pad_multiple=self.pad_multiple)
        if self.bucketing:
            stream = TaskStream(encoded, BATCH, self.seed, None)
            self.batches = [stream.batch(self.passes * stream.batches_per_pass + k) for k in range(stream.batches_per_pass)]
        else:  # tokenised once, but batches of shuffled rows padded to their longest row
            order = np.random.default_rng([self.seed, self.passes]).permutation(len(encoded))
            self.batches = [encoded.collate(order[i : i + BATCH]) for i in range(0, len(order), BATCH)]
        self.passes += 1
        return len(self.batches), time.perf_counter() - start

    def step(self, k: int) -> float:
        start = time.perf_counter()
        losses = self.step_fn({self.data.task.name: self.batches[k]}, self.global_step)
        {n: float(v) for n, v in losses.items()}  # the training loop reads the losses every step
        self.global_step += 1
        return time.perf_counter() - start

    def padded_tokens(self) -> int:
        return sum(b.a["input_ids"].numel() + (b.b["input_ids"].numel() if b.b else 0) for b in self.batches)


def lever_specs(levers: bool, compile_: bool) -> dict[str, tuple[str, dict]]:
    import torch

    from powerbert.model.device import resolve_precision, training_attention

    specs = {"reference": ("ReferenceSide", {}), "powerbert": ("PowerBertSide", {})}
    if levers:
        # Each lever the product's own choice on this CPU, switched the other way. Where the CPU has
        # no bf16 kernels the product runs fp32, and a bf16 side would only time torch's fallback.
        cpu = torch.device("cpu")
        precision = resolve_precision("auto", cpu)
        other_attention = "sdpa" if training_attention("auto", cpu, precision) == "eager" else "eager"
        if precision == "bf16":
            specs["powerbert, fp32"] = ("PowerBertSide", {"precision": "fp32"})
            specs["powerbert, passes under autocast"] = ("PowerBertSide", {"train_weights": "fp32"})
        specs.update({
            "powerbert, no bucketing": ("PowerBertSide", {"bucketing": False}),
            "powerbert, allocator untuned": ("PowerBertSide", {"tuned": False}),
            "powerbert, default AdamW": ("PowerBertSide", {"fused": False}),
            f"powerbert, {other_attention} attention": ("PowerBertSide", {"attention": other_attention}),
            "powerbert, row-wise embedding table": ("PowerBertSide", {"embedding_update": "rows"}),
            "powerbert, packed dropout masks": ("PowerBertSide", {"dropout_masks": "packed"}),
            "powerbert, 1 thread": ("PowerBertSide", {"threads": 1}),
        })
    if compile_:
        specs["powerbert, torch.compile"] = ("PowerBertSide", {"compile_encoder": True})
    return specs


def measure(task: str, rows: int, repeats: int, levers: bool, compile_: bool, seed: int, threads: int | None) -> float:
    from sides import Sides

    specs = lever_specs(levers, compile_)
    common_spec = {"task": task, "rows": rows, "seed": seed}
    if threads:
        specs = {name: (cls, {"threads": threads, **kw}) for name, (cls, kw) in specs.items()}
    print(f"-- {task}: {rows} rows of its train file, batches of {BATCH}, {repeats} rounds after a warm-up step; "
          f"sides: {', '.join(specs)}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in specs}
    with Sides({name: ("train_throughput", cls, {**common_spec, **kw})
                for name, (cls, kw) in specs.items()}) as sides:
        sides.each("begin_pass")
        sides.each("step", 0)  # warm-up: first-call costs, the optimizer state, the heap
        for r in range(repeats):
            passes = sides.each("begin_pass")
            counts = {n for n, _ in passes.values()}
            assert len(counts) == 1, f"sides disagree on the number of batches: {passes}"
            total = {name: prep for name, (_, prep) in passes.items()}
            for k in range(counts.pop()):
                for name, seconds in sides.each("step", k, reverse=(r + k) % 2 == 1).items():
                    total[name] += seconds
            for name, seconds in total.items():
                times[name].append(rows / seconds)
    ref = common.median(times["reference"])
    for name, values in times.items():
        print(f"   {name:<30} {common.median(values):7.2f} examples/s  (rounds {common.spread(values)})  "
              f"{common.median(values) / ref:5.2f}x the reference", flush=True)
    return common.median(times["powerbert"]) / ref


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sst,sts", help="comma-separated: sst, sts (or para)")
    parser.add_argument("--rows", type=int, default=128, help="training rows per round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per side")
    parser.add_argument("--levers", action="store_true", help="also time each lever switched the other way on its own")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the encoder (slow to compile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of every side (default: each side's own)")
    args = parser.parse_args(argv)
    common.header("bench 1: training throughput, PowerBERT step path vs a course-style loop")
    ratios = {task: measure(task, args.rows, args.repeats, args.levers, args.compile, args.seed, args.threads)
              for task in args.tasks.split(",")}
    print("   " + ", ".join(f"{t} {r:.2f}x" for t, r in ratios.items()))
    return common.verdict("training throughput, PowerBERT / reference (worst task)", min(ratios.values()), TARGET, at_least=True)


if __name__ == "__main__":
    sys.exit(main())
