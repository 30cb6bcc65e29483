"""Builders for test fixtures: a tiny BERT folder and separable toy task files.

Kept apart from conftest.py so subprocess-based tests can call them too.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTIMENT = [["awful", "horrid"], ["dull", "weak"], ["okay", "fine"], ["good", "nice"], ["great", "superb"]]
FILLER = ["the", "a", "movie", "film", "was", "is", "plot", "story", "very", "and", "cast", "it"]
TOPICS = ["cats", "dogs", "rain", "music", "money", "trains", "bread", "chess", "snow", "fish", "books", "tea"]
TOY_WORDS = sorted({w for g in SENTIMENT for w in g} | set(FILLER) | set(TOPICS) | {"what", "about", "why", "i", "do", "like", "?", ".", ","})


def write_tiny_model(folder: Path) -> Path:
    """Save a random 2-layer BERT (hidden 32) and a WordPiece tokenizer into folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + TOY_WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789!")
    vocab = list(dict.fromkeys(vocab))
    # transformers 5 takes the vocabulary itself (`vocab=`); 4.x only reads a vocab.txt file.
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    try:
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    except TypeError:
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def write_task_file(path: Path, header: list[str], rows: list[list], *, newline: str = "\n") -> Path:
    """Write rows in the CS224N format: tab-separated, header with an empty first cell, row numbers."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator=newline)
        writer.writerow(["", *header])
        for i, row in enumerate(rows):
            writer.writerow([i, *row])
    return Path(path)


def _sentence(rng: random.Random, keyword: str) -> str:
    words = rng.sample(FILLER, 4)
    words.insert(rng.randrange(5), keyword)
    return " ".join(words) + " ."


def write_toy_dataset(folder: Path, n_train: int = 240, n_dev: int = 60) -> Path:
    """Separable toy files for sst, para, sts and cfimdb (train, dev, test-student)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("dev", n_dev, 2), ("test-student", 20, 3)):
        rng = random.Random(seed)
        labelled = split != "test-student"
        sst, cfimdb, para, sts = [], [], [], []
        for i in range(n):
            label = rng.randrange(5)
            row = [f"s{split[0]}{i:04x}", _sentence(rng, rng.choice(SENTIMENT[label]))]
            sst.append(row + ([label] if labelled else []))
            good = rng.randrange(2)
            row = [f"c{split[0]}{i:04x}", _sentence(rng, rng.choice(SENTIMENT[4 if good else 0]))]
            cfimdb.append(row + ([good] if labelled else []))
            a = rng.choice(TOPICS)
            dup = rng.randrange(2)
            b = a if dup else rng.choice([t for t in TOPICS if t != a])
            row = [f"p{split[0]}{i:04x}", f"what about {a} ?", f"why do i like {b} ?"]
            para.append(row + ([f"{float(dup):.1f}"] if labelled else []))
            topics = rng.sample(TOPICS, 5)
            shared = rng.randrange(6)
            other = topics[:shared] + rng.sample([t for t in TOPICS if t not in topics], 5 - shared)
            row = [f"t{split[0]}{i:04x}", " ".join(topics), " ".join(other)]
            sts.append(row + ([f"{float(shared):.1f}"] if labelled else []))
        write_task_file(folder / f"ids-sst-{split}.csv", ["id", "sentence"] + (["sentiment"] if labelled else []), sst)
        write_task_file(folder / f"ids-cfimdb-{split}.csv", ["id", "sentence"] + (["sentiment"] if labelled else []), cfimdb)
        write_task_file(folder / f"quora-{split}.csv", ["id", "sentence1", "sentence2"] + (["is_duplicate"] if labelled else []), para)
        write_task_file(folder / f"sts-{split}.csv", ["id", "sentence1", "sentence2"] + (["similarity"] if labelled else []), sts)
    return folder


def noisy_outputs(task: str, gold, rng):
    """A model's dev outputs for `gold` that are informative but wrong often: sst logits [N, 5],
    a para logit [N], an sts score [N] in 0..5. Draws from `rng` (numpy) in a fixed order."""
    import numpy as np

    n = len(gold)
    if task == "sst":
        return np.eye(5)[gold] * 1.5 + rng.normal(size=(n, 5))
    if task == "para":
        return (2 * gold - 1) + rng.normal(size=n) * 1.5
    return np.clip(gold + rng.normal(size=n), 0, 5)


def run_worker_here(db: Path | str, run_id: int, device_label: str = "cpu") -> int:
    """The real worker (powerbert.runner.worker.run_worker) in this process, for tests that
    train without a supervisor; the SIGTERM/SIGINT handlers it installs are put back for pytest."""
    import signal

    from powerbert.runner.worker import run_worker

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        return run_worker(str(db), run_id, device_label)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
