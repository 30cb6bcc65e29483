"""Tokenise a task's rows once, then serve length-bucketed, dynamically padded batches.

Tokenising up front (instead of per batch) and grouping rows of similar length (so a batch is
padded only to about its own longest row) are the two cheapest speed-ups on a CPU; see
bench/train_throughput.py for what they are worth.

Pairs are encoded one of two ways, chosen by the head that reads them:
  - "cross": both sentences in one input, [CLS] a [SEP] b [SEP] with token type ids;
  - "bi":    each sentence on its own, so the model embeds them separately (cosine STS, the
             bi-encoder paraphrase head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from powerbert.config import PairMode
from powerbert.data.files import TaskData


@dataclass
class Batch:
    """Padded tensors for one batch of one task.

    `a` is the first (or only, or cross-encoded) input; `b` the second sentence in bi mode.
    Each is a dict of input_ids, attention_mask and (for cross pairs) token_type_ids.
    """

    task: str
    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor] | None
    labels: torch.Tensor | None
    indices: list[int]  # row positions in the task's file order

    def to(self, device: torch.device | str) -> Batch:
        move = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        return Batch(
            self.task,
            move(self.a),
            move(self.b) if self.b is not None else None,
            self.labels.to(device) if self.labels is not None else None,
            self.indices,
        )

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class EncodedTask:
    """One task's rows as token ids, ready to batch."""

    task: str
    ids: list[str]
    labels: np.ndarray | None  # float64 [N]; None for unlabelled files
    first: list[list[int]]  # token ids of the first (or cross-encoded) input
    first_types: list[list[int]] | None  # token type ids when cross-encoded pairs
    second: list[list[int]] | None  # token ids of the second sentence in bi mode
    pad_id: int
    max_length: int  # the longest an input may be: batches are never padded past it
    # A batch's width is its longest row rounded up to a multiple of this (the columns added are
    # masked); where it pays depends on the device: powerbert.model.device.batch_width_multiple.
    pad_multiple: int = 1

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        n1 = np.fromiter((len(x) for x in self.first), dtype=np.int64, count=len(self))
        if self.second is None:
            return n1
        n2 = np.fromiter((len(x) for x in self.second), dtype=np.int64, count=len(self))
        return np.maximum(n1, n2)

    def collate(self, indices: list[int] | np.ndarray) -> Batch:
        indices = [int(i) for i in indices]
        pad = lambda rows, pad_id: _pad(rows, pad_id, self.max_length, self.pad_multiple)  # noqa: E731
        a = pad([self.first[i] for i in indices], self.pad_id)
        if self.first_types is not None:
            a["token_type_ids"] = pad([self.first_types[i] for i in indices], 0)["input_ids"]
        b = pad([self.second[i] for i in indices], self.pad_id) if self.second else None
        labels = None
        if self.labels is not None:
            labels = torch.from_numpy(self.labels[indices].astype(np.float32))
        return Batch(self.task, a, b, labels, indices)


def _pad(rows: list[list[int]], pad_id: int, max_length: int, multiple: int) -> dict[str, torch.Tensor]:
    """Token ids padded to the batch's width (its longest row rounded up to `multiple`, at most
    max_length) and the attention mask that marks the real tokens."""
    lengths = torch.tensor([len(r) for r in rows])
    longest = int(lengths.max())
    width = max(longest, min(math.ceil(longest / multiple) * multiple, max_length))
    ids = pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=pad_id)
    ids = F.pad(ids, (0, width - longest), value=pad_id)
    mask = (torch.arange(width) < lengths[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask}


def encode_texts(
    tokenizer, texts: list[str], max_length: int, second: list[str] | None = None
) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids (and token type ids for pairs) for each text, truncated to max_length."""
    enc = tokenizer(
        texts,
        second,
        truncation=True if second is None else "longest_first",
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=second is not None,
    )
    return enc["input_ids"], enc.get("token_type_ids") if second is not None else None


def encode_task(data: TaskData, tokenizer, *, pair_mode: PairMode, max_length: int, pad_multiple: int = 1) -> EncodedTask:
    """Tokenise every row of `data` once; its batches' widths are rounded up to `pad_multiple`."""
    task = data.task
    ids = [ex.id for ex in data.examples]
    labels = None
    if data.labelled:
        labels = np.array([ex.label for ex in data.examples], dtype=np.float64)
    firsts = [ex.texts[0] for ex in data.examples]
    first_types = second = None
    if task.is_pair:
        seconds = [ex.texts[1] for ex in data.examples]
        if pair_mode == "cross":
            first, first_types = encode_texts(tokenizer, firsts, max_length, seconds)
        else:
            first, _ = encode_texts(tokenizer, firsts, max_length)
            second, _ = encode_texts(tokenizer, seconds, max_length)
    else:
        first, _ = encode_texts(tokenizer, firsts, max_length)
    return EncodedTask(task.name, ids, labels, first, first_types, second, tokenizer.pad_token_id, max_length, pad_multiple)


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, rows: np.ndarray | None = None, *, window_batches: int,
) -> list[np.ndarray]:
    """Shuffle rows, sort by length inside windows of `window_batches` batches, cut into
    batches, shuffle the batches (a window of 1 batch: batches of random rows).

    `rows` restricts the pass to those row positions (e.g. a --max-train sample).
    """
    order = rng.permutation(len(lengths)) if rows is None else rng.permutation(rows)
    window = batch_size * window_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order for evaluation: the least padding, no randomness."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
