"""How prediction runs the models: texts tokenised once per pair mode, each distinct sentence
embedded once per model (the PredictionCache; once per model and task where each task has its
own top layers), and outputs computed over length-sorted batches at the model's training
precision."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from powerbert.data.batching import EncodedTask, encode_texts, sorted_batches
from powerbert.errors import InputError
from powerbert.inference.loading import LoadedExperiment, LoadedModel
from powerbert.model.device import autocast_for, batch_width_multiple
from powerbert.tasks import TASKS

BATCH_SIZE = 64  # rows per forward pass


@dataclass
class PredictionCache:
    """Token ids and embeddings already computed, to share between calls on the same inputs
    (e.g. para and sts on one sentence pair). Keep one per batch of inputs: it grows with them."""

    tokens: dict[tuple, tuple[tuple, bool]] = field(default_factory=dict)  # (mode, max_length, texts) -> (key, truncated)
    # (model, task or None, key) -> [H]: the task where the model's tasks have their own top layers
    embeddings: dict[tuple, torch.Tensor] = field(default_factory=dict)


def tokenize_inputs(loaded: LoadedExperiment, mode: str, max_length: int, items: list[tuple[str, ...]], cache: PredictionCache):
    """Token keys for each item, tokenising only items not in the cache (one batched call).

    A key is (ids,) for one sentence and (ids, type ids) for a cross-encoded pair."""
    todo = list(dict.fromkeys(i for i in items if (mode, max_length, i) not in cache.tokens))
    if todo:
        tok = loaded.tokenizer
        if mode == "cross":
            ids, types = encode_texts(tok, [a for a, _ in todo], max_length, [b for _, b in todo])
            keys = [(tuple(i), tuple(t)) for i, t in zip(ids, types)]
        else:
            ids, _ = encode_texts(tok, [a for (a,) in todo], max_length)
            keys = [(tuple(i),) for i in ids]
        # Only an input that fills max_length may have been cut: check those without truncation.
        full = [n for n, k in enumerate(keys) if len(k[0]) >= max_length]
        cut = set()
        if full:
            firsts = [todo[n][0] for n in full]
            seconds = [todo[n][1] for n in full] if mode == "cross" else None
            whole = tok(firsts, seconds, truncation=False, return_attention_mask=False, return_token_type_ids=False)
            cut = {n for n, w in zip(full, whole["input_ids"]) if len(w) > max_length}
        floor = tok.num_special_tokens_to_add(pair=mode == "cross")
        for n, (item, key) in enumerate(zip(todo, keys)):
            if len(key[0]) <= floor:
                raise InputError(f"input {' / '.join(map(repr, item))} has nothing the tokenizer can read")
            cache.tokens[(mode, max_length, item)] = (key, n in cut)
    return [cache.tokens[(mode, max_length, i)] for i in items]


def embedding_keys(loaded: LoadedExperiment, member: LoadedModel, task: str, rows: list[tuple[str, ...]],
                cache: PredictionCache) -> tuple[list[tuple], set[int]]:
    """The token keys one model encodes for the rows of a task, and the rows that were cut.

    One key per row (a sentence, or a cross-encoded pair), or two per row for a bi-encoded pair:
    every first sentence, then every second, so that both go through one encoder pass."""
    spec = TASKS[task]
    mode = member.model.head_config.pair_mode(task) if spec.is_pair else "bi"
    max_length = member.config.max_length
    if spec.is_pair and mode == "bi":
        a = tokenize_inputs(loaded, "bi", max_length, [(r[0],) for r in rows], cache)
        b = tokenize_inputs(loaded, "bi", max_length, [(r[1],) for r in rows], cache)
        return [k for k, _ in a + b], {i for i, ((_, x), (_, y)) in enumerate(zip(a, b)) if x or y}
    tokens = tokenize_inputs(loaded, mode, max_length, rows, cache)
    return [k for k, _ in tokens], {i for i, (_, x) in enumerate(tokens) if x}


@torch.inference_mode()
def embed_keys(loaded: LoadedExperiment, member: LoadedModel, task: str, keys: list[tuple], cache: PredictionCache) -> torch.Tensor:
    """Pooled embeddings [len(keys), H] for `task`'s head; each distinct key is encoded once per
    model, or once per model and task where the model's tasks have their own top layers.

    Keys of single sentences and of cross-encoded pairs may be mixed: a sentence's token type
    ids are all 0, which is what the encoder assumes when it is given none."""
    scope = (member.name, task if member.model.task_layers else None)
    todo = list(dict.fromkeys(k for k in keys if (*scope, k) not in cache.embeddings))
    if todo:
        encoded = EncodedTask(
            task="", ids=[""] * len(todo), labels=None,
            first=[list(k[0]) for k in todo],
            first_types=[list(k[1]) if len(k) == 2 else [0] * len(k[0]) for k in todo],
            second=None, pad_id=loaded.tokenizer.pad_token_id, max_length=member.config.max_length,
            pad_multiple=batch_width_multiple(loaded.device, loaded.precision),
        )
        for indices in sorted_batches(encoded.lengths(), BATCH_SIZE):
            batch = encoded.collate(indices).to(loaded.device)
            with autocast_for(loaded.device, loaded.precision):
                pooled = member.model.embed(batch.a, task)
            for i, vector in zip(batch.indices, pooled):
                cache.embeddings[(*scope, todo[i])] = vector
    return torch.stack([cache.embeddings[(*scope, k)] for k in keys])


@torch.inference_mode()
def model_outputs(
    loaded: LoadedExperiment, member: LoadedModel, task: str, rows: list[tuple[str, ...]], cache: PredictionCache
) -> tuple[np.ndarray, set[int]]:
    """One model's outputs for the rows, and the positions of rows that were truncated."""
    keys, cut = embedding_keys(loaded, member, task, rows, cache)
    pooled = embed_keys(loaded, member, task, keys, cache)
    with autocast_for(loaded.device, loaded.precision):
        if TASKS[task].is_pair and member.model.head_config.pair_mode(task) == "bi":  # firsts, then seconds
            out = member.model.head_outputs(task, pooled[: len(rows)], pooled[len(rows) :])
        else:
            out = member.model.head_outputs(task, pooled)
    return out.float().cpu().numpy().astype(np.float64), cut
