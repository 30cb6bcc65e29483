"""Checking and cleaning the texts given to predict: control characters and odd whitespace
removed, each input the number of sentences its task takes, none empty."""

from __future__ import annotations

import unicodedata

from powerbert.errors import InputError
from powerbert.tasks import TASKS


def clean_text(text: str) -> str:
    """The text with control characters removed and whitespace runs made one space.

    Emoji, right-to-left scripts and format characters (joiners, direction marks) are kept:
    the tokenizer decides what to make of them.
    """
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch.isspace():
            kept.append(" ")
        elif category not in ("Cc", "Cs"):  # controls, and lone surrogates from undecodable bytes
            kept.append(ch)
    return " ".join("".join(kept).split())


def check_inputs(task: str, texts) -> list[tuple[str, ...]]:
    spec = TASKS[task]
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise InputError(f"{task}: no input: expected at least one {'sentence pair' if spec.is_pair else 'sentence'}")
    width = len(spec.text_columns)
    rows = []
    for i, item in enumerate(texts, 1):
        row = (item,) if isinstance(item, str) else tuple(item)
        if len(row) != width or not all(isinstance(t, str) for t in row):
            want = "a pair of sentences" if spec.is_pair else "one sentence"
            raise InputError(f"{task}: input {i} has {len(row)} text(s): the task takes {want} per input")
        cleaned = tuple(clean_text(t) for t in row)
        for j, (raw, text) in enumerate(zip(row, cleaned), 1):
            if not text:
                where = f"input {i}" + (f", sentence {j}," if spec.is_pair else "")
                what = "is empty" if not raw.strip() else "has only control characters"
                raise InputError(f"{task}: {where} {what}: expected some text")
        rows.append(cleaned)
    return rows
