"""A plain Hugging Face fine-tuning loop on SST, written without PowerBERT's training code, as a
quality reference for `powerbert train --tasks sst` (bench/RESULTS.md, "What MiniLM-L6 reaches").

    python bench/sst_plain_loop.py --lr 5e-5 --batch-size 16 --epochs 2 --seed 0
    powerbert train --tasks sst --data-dir ../shared/data/cs224n --max-train 0 --epochs 2 --lr 5e-5 --batch-size 16 --seed 0

The loop: the whole training file shuffled each epoch, tokenised and padded per batch (max
length 128), the default MiniLM encoder under bf16 autocast where the CPU has bf16 kernels and
in fp32 where it has not (`--precision`, decided as PowerBERT's `precision = "auto"` decides), mean
pooling, dropout 0.1 and a linear head computed in fp32, AdamW (weight decay 0.01), linear decay without warm-up, gradient
clipping at 1. It prints the dev accuracy after each epoch. It shares only the model loading
and the file reader with PowerBERT, so a gap between the two points at the training code.

`--step powerbert` feeds the same batches, with the same generator for the dropout masks,
through PowerBERT's model, optimizer, schedule and `TrainStep` instead; `--set KEY=VALUE` changes
one of that step's settings (`embedding_update=rows dropout_masks=packed` are the opt-in CPU
levers that compute or draw differently from the plain step).
"""

from __future__ import annotations

import argparse
import random
import time

import common
import torch

from powerbert.data.files import load_split
from powerbert.model.device import resolve_precision
from powerbert.model.multitask import load_encoder, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(common.DATA_DIR))
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", choices=["plain", "powerbert"], default="plain",
                        help="powerbert: the same batches through PowerBERT's model and TrainStep (the isolation of bench/RESULTS.md)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: bf16 autocast where this CPU has bf16 matmul kernels, fp32 where it has not")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="with --step powerbert: a setting of PowerBERT's step (e.g. embedding_update=rows)")
    args = parser.parse_args()
    if args.settings and args.step != "powerbert":
        parser.error("--set applies to --step powerbert only")
    # Without bf16 kernels torch multiplies bf16 matrices in a plain loop, 16-25x slower than fp32
    # (bench/RESULTS.md, "bf16 on a CPU without AVX-512"): a careful user turns autocast off there.
    precision = resolve_precision(args.precision, torch.device("cpu"))

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train = [(e.texts[0], int(e.label)) for e in load_split("sst", args.data_dir, "train").examples]
    dev = [(e.texts[0], int(e.label)) for e in load_split("sst", args.data_dir, "dev").examples]
    tokenizer, encoder = load_tokenizer(None), load_encoder(None)
    head, dropout = torch.nn.Linear(encoder.config.hidden_size, 5), torch.nn.Dropout(0.1)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps = args.epochs * -(-len(train) // args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    if args.step == "powerbert":
        from powerbert.config import parse_settings

        # Building PowerBERT's model draws its own head's weights (then replaced by `head`): put
        # the generator back, so that the dropout masks are the plain loop's draws too.
        rng_state = torch.get_rng_state()
        product_step = powerbert_step(encoder, head, steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                      precision=precision, **parse_settings(args.settings))
        torch.set_rng_state(rng_state)

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            states = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (states.float() * mask).sum(1) / mask.sum(1)

    step = "plain step" if args.step == "plain" else " ".join(["PowerBERT's TrainStep", *args.settings])
    common.header(f"sst, plain loop's batches: lr {args.lr:g}, batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, {precision}, {step}")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        encoder.train()
        rng.shuffle(train)
        for i in range(0, len(train), args.batch_size):
            chunk = train[i : i + args.batch_size]
            if args.step == "powerbert":
                encoded = tokenizer([text for text, _ in chunk], padding=True, truncation=True, max_length=128, return_tensors="pt")
                product_step(encoded, torch.tensor([label for _, label in chunk]))
                continue
            logits = head(dropout(embed([text for text, _ in chunk])))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([label for _, label in chunk]))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
        encoder.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(dev), 64):
                chunk = dev[i : i + 64]
                predicted = head(embed([text for text, _ in chunk])).argmax(-1)
                correct += int((predicted == torch.tensor([label for _, label in chunk])).sum())
        print(f"epoch {epoch} dev: sst {correct / len(dev):.4f}  ({time.perf_counter() - start:.0f} s)", flush=True)


def powerbert_step(encoder, head, total_steps: int, **settings):
    """PowerBERT's model (around this encoder and head), optimizer, schedule and `TrainStep`, with
    the plain loop's recipe unless `settings` say otherwise: a function that takes one step on a
    batch the plain loop's tokenizer padded (input_ids, attention_mask) and returns its loss.
    bench/sst_step_parity.py uses it too."""
    from powerbert.config import TrainConfig, apply_overrides
    from powerbert.data.batching import Batch
    from powerbert.model.multitask import MultitaskBert
    from powerbert.model.surgery import make_combiner
    from powerbert.training.step import TrainStep, make_optimizer, make_schedule

    recipe = {"lr": 5e-5, "weight_decay": 0.01, "warmup": 0.0, "batch_size": 16, "max_length": 128}
    config = apply_overrides(TrainConfig(), {**recipe, **settings})
    model = MultitaskBert(encoder, ("sst",), config.heads)
    model.heads["sst"] = head
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, total_steps)
    step = TrainStep(model, optimizer, make_combiner(config.surgery, config.seed), config, torch.device("cpu"))
    taken = 0

    def take(encoded, labels: torch.Tensor) -> float:
        nonlocal taken
        inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        loss = step({"sst": Batch("sst", inputs, None, labels.float(), list(range(len(labels))))}, taken)
        schedule.step()
        taken += 1
        return float(loss["sst"])

    return take


if __name__ == "__main__":
    main()
