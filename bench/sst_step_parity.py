"""Does PowerBERT's training step compute what a plain loop's step computes? The plain loop's
exact SST batches (bench/sst_plain_loop.py: shuffled rows padded per batch) through both, from
the same weights, dropout off, one variant at a time.

    python bench/sst_step_parity.py                 # 40 steps, 2 threads, about a minute
    python bench/sst_step_parity.py --precision fp32

Every side runs at one precision: `--precision`, by default bf16 autocast where the CPU has bf16
matmul kernels and fp32 where it has not (as PowerBERT's `precision = "auto"` decides). Under
fp32 the "head under autocast" variant is the plain loop again.

Every variant starts from the same encoder and head weights and trains on the same 40 batches
of 16 with AdamW (lr 5e-5, weight decay 0.01, linear decay over one epoch's 534 steps, clipping
at 1). Dropout is off so that the only differences are arithmetic ones. Printed per variant: the
loss at steps 1, 10 and 40, the mean loss, and the largest difference of any weight from the
plain loop's after the 40 steps. bf16 rounding alone moves weights by about 1e-3 in 40 steps (Adam
divides each update by its own scale, so tiny gradient differences become whole-size steps),
so a variant that differs by that much and has the same losses computes the same step.
"""

from __future__ import annotations

import argparse
import copy
import random

import common
import torch
from sst_plain_loop import powerbert_step

from powerbert.data.files import load_split
from powerbert.model.device import resolve_precision
from powerbert.model.multitask import load_encoder, load_tokenizer

EPOCH_STEPS = 534  # one epoch of the whole SST file at batch 16: the schedule of a real run


def batches(data_dir: str, steps: int, seed: int):
    rows = [(e.texts[0], int(e.label)) for e in load_split("sst", data_dir, "train").examples]
    random.Random(seed).shuffle(rows)
    tokenizer = load_tokenizer(None)
    out = []
    for i in range(steps):
        chunk = rows[i * 16 : (i + 1) * 16]
        encoded = tokenizer([t for t, _ in chunk], padding=True, truncation=True, max_length=128, return_tensors="pt")
        out.append((encoded, torch.tensor([label for _, label in chunk])))
    return out


def plain(encoder, head, data, *, precision, head_in_autocast=False, fused=False):
    """bench/sst_plain_loop.py's step: encoder under bf16 autocast (at precision bf16), pooling
    and head in fp32."""
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01, fused=fused or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / EPOCH_STEPS))
    losses = []
    for encoded, labels in data:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            states = encoder(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1)
            if head_in_autocast:
                logits = head(pooled).float()
        if not head_in_autocast:
            logits = head(pooled.float())
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def product(encoder, head, data, **settings):
    """PowerBERT's TrainStep (the product's step) with the plain loop's recipe, dropout off."""
    take = powerbert_step(encoder, head, EPOCH_STEPS, dropout=0.0, **settings)
    return [take(encoded, labels) for encoded, labels in data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(common.DATA_DIR))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: bf16 autocast where this CPU has bf16 matmul kernels, fp32 where it has not")
    args = parser.parse_args()
    precision = resolve_precision(args.precision, torch.device("cpu"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = batches(args.data_dir, args.steps, 0)
    encoder0 = load_encoder(None).eval()  # eval(): dropout off; gradients still flow
    head0 = torch.nn.Linear(encoder0.config.hidden_size, 5)

    variants = {
        "plain loop": lambda e, h: plain(e, h, data, precision=precision),
        "plain loop, again": lambda e, h: plain(e, h, data, precision=precision),
        "plain, head under autocast": lambda e, h: plain(e, h, data, precision=precision, head_in_autocast=True),
        "plain, fused AdamW": lambda e, h: plain(e, h, data, precision=precision, fused=True),
        "TrainStep (the product)": lambda e, h: product(e, h, data, precision=precision),
        "TrainStep, PCGrad off": lambda e, h: product(e, h, data, precision=precision, surgery="sum"),
        # The opt-in lazy (row-wise) table update moves untouched rows only when a batch touches
        # them again, where AdamW's momentum moves every row every step.
        "TrainStep, row-wise table": lambda e, h: product(e, h, data, precision=precision, embedding_update="rows"),
    }
    if precision == "bf16":  # the product's bf16 levers, each undone
        variants["TrainStep, passes on fp32"] = lambda e, h: product(e, h, data, precision="bf16", train_weights="fp32")
        variants["TrainStep, fp32"] = lambda e, h: product(e, h, data, precision="fp32")
    common.header(f"sst step parity: {args.steps} batches of the plain loop through each variant, dropout off, {precision}")
    reference = None
    for name, train in variants.items():
        encoder, head = copy.deepcopy(encoder0), copy.deepcopy(head0)
        losses = train(encoder, head)
        weights = [p.detach().clone() for p in list(encoder.parameters()) + list(head.parameters())]
        reference = reference or weights
        drift = max((a - b).abs().max().item() for a, b in zip(reference, weights))
        print(f"   {name:28s} loss at 1 {losses[0]:.4f}  at 10 {losses[9]:.4f}  at {len(losses)} {losses[-1]:.4f}  "
              f"mean {sum(losses) / len(losses):.4f}  max |w - plain| {drift:.1e}", flush=True)


if __name__ == "__main__":
    main()
