"""Peer benchmark: `powerbert train` against Hugging Face's `Trainer` on the same fine-tuning.

    pip install -e '.[bench]'                       # Trainer needs accelerate
    python bench/hf_trainer_peer.py                 # sst and sts: 4,000 rows, 2 epochs
    python bench/hf_trainer_peer.py --tasks sts --rows 1000 --epochs 1

Both sides fine-tune the default MiniLM encoder on the same task, the same `--rows` rows of its
training file (drawn at random, seeded: bench/common.py's trimmed_data), for the same epochs,
with the same learning rate, batch size, max length, warm-up (10%) and linear decay, AdamW with
weight decay 0.01, gradient clipping at 1, dropout 0.1, mean pooling, scoring the whole dev file
after every epoch. SST: a linear head on the pooled
embedding, cross-entropy, accuracy. STS: each sentence embedded alone, prediction |cos(u, v)| * 5,
MSE, Pearson r (the paper's cosine fine-tuning). The Trainer side is set up as a careful user
would: bf16 mixed precision where the CPU has bf16 matmul kernels (without them torch multiplies
bf16 matrices in a plain loop, 16-25x slower than fp32, so a careful user leaves bf16 off there),
length-grouped batches (`train_sampling_strategy="group_by_length"`), fused AdamW (its default),
no checkpoints, no logging integrations. PowerBERT's side is
`train_subset` with the same settings, as `powerbert train` runs it (checkpoints included; its
default `precision = "auto"` makes the same choice of bf16 or fp32).

Each side runs in a fresh process (so neither inherits the other's threads or allocator tuning),
one after the other, alternating which goes first per task; both use torch's default threads.
Throughput is training rows x epochs over the wall time of the training call (after the model is
loaded and the rows tokenised; the per-epoch dev scoring is inside it on both sides). The dev
score is the best epoch's. Target: PowerBERT >= 1.3x Trainer's examples/s on each task, and its dev
score no lower than Trainer's minus 0.5 points; exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import torch

from powerbert.model.device import fast_bf16, resolve_precision

TARGET_RATIO = 1.3
SCORE_MARGIN = 0.005  # PowerBERT's dev score may be this much below Trainer's


def recipe(args) -> dict:
    return {"lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs, "max_length": args.max_length,
            "warmup": 0.1, "weight_decay": 0.01, "seed": args.seed}


# ---------------------------------------------------------------- PowerBERT's side


def powerbert_side(task: str, data_dir: str, settings: dict) -> dict:
    from powerbert.config import TrainConfig, apply_overrides
    from powerbert.training.callbacks import TrainCallbacks
    from powerbert.training.loop import train_subset

    class Clock(TrainCallbacks):
        started = None
        scores: list[float] = []

        def on_start(self, info):
            self.started = time.perf_counter()
            self.rows = sum(info.train_rows.values())

        def on_eval(self, result):
            self.scores.append(result.scores[task])

    config = apply_overrides(TrainConfig(), {"tasks": (task,), "data_dir": data_dir, "para_head": "cross", "pooling": "mean", **settings})
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="peer-powerbert-") as out:
        train_subset(config, out, clock)
        seconds = time.perf_counter() - clock.started
    return {"seconds": seconds, "examples": clock.rows * settings["epochs"], "scores": clock.scores}


# ---------------------------------------------------------------- Trainer's side


def trainer_side(task: str, data_dir: str, settings: dict) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from powerbert.data.files import load_split
    from powerbert.model.multitask import load_encoder, load_tokenizer

    tokenizer = load_tokenizer(None)

    def tokenise(texts):
        return tokenizer(texts, truncation=True, max_length=settings["max_length"])["input_ids"]

    def rows(split):
        examples = load_split(task, data_dir, split).examples
        first = tokenise([e.texts[0] for e in examples])
        if task == "sst":
            return [{"input_ids": a, "labels": int(e.label)} for a, e in zip(first, examples)]
        second = tokenise([e.texts[1] for e in examples])
        return [{"input_ids": a, "input_ids_b": b, "labels": float(e.label)} for a, b, e in zip(first, second, examples)]

    def pad(seqs):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
        return ids, mask

    def collate(features):
        batch = dict(zip(("input_ids", "attention_mask"), pad([f["input_ids"] for f in features])))
        if "input_ids_b" in features[0]:
            batch["input_ids_b"], batch["attention_mask_b"] = pad([f["input_ids_b"] for f in features])
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long if task == "sst" else torch.float)
        return batch

    class MeanPooled(torch.nn.Module):
        """The encoder, mean pooling, and the task's head; returns (loss, outputs) as Trainer expects."""

        def __init__(self):
            super().__init__()
            self.encoder = load_encoder(None)
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, 5) if task == "sst" else None

        def embed(self, ids, mask):
            states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(states.dtype)
            return (states * m).sum(1) / m.sum(1).clamp(min=1.0)

        def forward(self, input_ids, attention_mask, labels=None, input_ids_b=None, attention_mask_b=None):
            if self.head is not None:
                outputs = self.head(self.dropout(self.embed(input_ids, attention_mask))).float()
                loss = F.cross_entropy(outputs, labels) if labels is not None else None
            else:
                u, v = self.embed(input_ids, attention_mask), self.embed(input_ids_b, attention_mask_b)
                outputs = F.cosine_similarity(u.float(), v.float(), dim=-1).abs() * 5
                loss = F.mse_loss(outputs, labels) if labels is not None else None
            return (loss, outputs) if loss is not None else (outputs,)

    def score(prediction):
        outputs, labels = prediction.predictions, prediction.label_ids
        if task == "sst":
            return {"score": float((outputs.argmax(-1) == labels).mean())}
        return {"score": float(np.corrcoef(outputs, labels)[0, 1])}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.started = time.perf_counter()

    train, dev = rows("train"), rows("dev")
    torch.manual_seed(settings["seed"])
    model = MeanPooled()
    with tempfile.TemporaryDirectory(prefix="peer-trainer-") as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=settings["batch_size"], per_device_eval_batch_size=64,
            learning_rate=settings["lr"], num_train_epochs=settings["epochs"], weight_decay=settings["weight_decay"],
            warmup_steps=settings["warmup"], lr_scheduler_type="linear", max_grad_norm=1.0, seed=settings["seed"],
            bf16=fast_bf16(torch.device("cpu")), use_cpu=True, train_sampling_strategy="group_by_length",
            eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to="none",
            label_names=["labels"], remove_unused_columns=False, disable_tqdm=True,
        )
        clock = Clock()
        trainer = Trainer(model=model, args=arguments, train_dataset=train, eval_dataset=dev, data_collator=collate,
                          compute_metrics=score, callbacks=[clock])
        trainer.train()
        seconds = time.perf_counter() - clock.started
        scores = [entry["eval_score"] for entry in trainer.state.log_history if "eval_score" in entry]
    return {"seconds": seconds, "examples": len(train) * settings["epochs"], "scores": scores}


SIDES = {"trainer": trainer_side, "powerbert": powerbert_side}


# ---------------------------------------------------------------- the comparison


def run_side(side: str, task: str, data_dir: Path, settings: dict) -> dict:
    command = [sys.executable, __file__, "--side", side, "--task", task, "--side-data", str(data_dir),
               "--side-settings", json.dumps(settings)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("SIDE ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"the {side} side on {task} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return json.loads(lines[-1][5:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sst,sts", help="comma-separated: sst, sts")
    parser.add_argument("--rows", type=int, default=4000, help="training rows, drawn at random from the file (seeded)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--side-data", help=argparse.SUPPRESS)
    parser.add_argument("--side-settings", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:  # one side, in this fresh process: print its result as one JSON line
        result = SIDES[args.side](args.task, args.side_data, json.loads(args.side_settings))
        print("SIDE " + json.dumps(result), flush=True)
        return 0

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - {"sst", "sts"}:
        parser.error(f"--tasks {args.tasks}: expected sst, sts or both")
    settings = recipe(args)
    precision = resolve_precision("auto", torch.device("cpu"))
    common.header(f"powerbert train vs transformers.Trainer: {args.rows} rows x {args.epochs} epochs, lr {args.lr:g}, "
                  f"batch {args.batch_size}, max length {args.max_length}, seed {args.seed}, both sides {precision}")
    ratios, scores_ok = [], True
    with tempfile.TemporaryDirectory(prefix="peer-data-") as tmp:
        data_dir = common.trimmed_data(Path(tmp), rows=None, train_rows=args.rows)
        for i, task in enumerate(tasks):
            order = ["trainer", "powerbert"] if i % 2 == 0 else ["powerbert", "trainer"]
            results = {side: run_side(side, task, data_dir, settings) for side in order}
            print(f"-- {task}: {args.rows} rows x {args.epochs} epochs")
            for side in ("trainer", "powerbert"):
                r = results[side]
                rate = r["examples"] / r["seconds"]
                epochs = "  ".join(f"{s:.4f}" for s in r["scores"])
                print(f"   {side:10s} {rate:6.1f} examples/s  ({r['seconds']:.0f} s)  dev after each epoch {epochs}  best {max(r['scores']):.4f}")
            ratio = (results["powerbert"]["examples"] / results["powerbert"]["seconds"]) / (results["trainer"]["examples"] / results["trainer"]["seconds"])
            gap = max(results["powerbert"]["scores"]) - max(results["trainer"]["scores"])
            ratios.append(ratio)
            scores_ok &= gap >= -SCORE_MARGIN
            print(f"   {task}: throughput {ratio:.2f}x Trainer's; dev score {gap * 100:+.2f} points "
                  f"({'within' if gap >= -SCORE_MARGIN else 'MORE than'} {SCORE_MARGIN * 100:.1f} below Trainer's at worst)", flush=True)
    code = common.verdict("training throughput, powerbert train / Trainer (worst task)", min(ratios), TARGET_RATIO, at_least=True)
    if not scores_ok:
        print("dev scores: PowerBERT more than 0.5 points below Trainer's on a task: MISSED")
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
