"""Build the synthetic demo dataset that ships in this folder.

Every sentence is made here from hand-written templates and word lists (no corpus is copied), so
the demo is small, free to ship, and learnable in minutes on a CPU. The output is deterministic:
rerun it from the repository root with

    python -m powerbert.data.demo.generate            # rewrites the CSVs in powerbert/data/demo/
    python -m powerbert.data.demo.generate OUT_DIR    # or writes them somewhere else

Files follow the CS224N format exactly (tab-separated, header with an empty first cell, row
numbers, hex ids, csv quoting), so `powerbert.data.files` reads them like the real ones. Train, dev and
test-student come from the same generator with different seeds, and no row repeats across them.

Over 300 lines on purpose: most of it is word lists and templates, data rather than logic.
"""

from __future__ import annotations

import csv
import hashlib
import random
import sys
from collections.abc import Callable
from pathlib import Path

from powerbert.tasks import TASKS

SIZES = {  # rows per split: train, dev, test-student
    "sst": (400, 100, 50),
    "para": (400, 100, 50),
    "sts": (400, 100, 50),
    "cfimdb": (200, 60, 40),
}
SEEDS = {"train": 1, "dev": 2, "test-student": 3}

# ---- sst: movie reviews graded 0 (very negative) .. 4 (very positive) -----------------------

NOUNS = ["film", "movie", "picture", "drama", "comedy", "thriller", "story", "sequel", "romance",
         "western", "documentary", "musical", "mystery", "adventure", "fantasy"]
PARTS = ["the script", "the acting", "the ending", "the music", "the dialogue", "the plot",
         "the cast", "the direction", "the humor", "the lead performance", "the pacing", "the story"]
GRADE_ADJ = [
    ["dreadful", "dire", "awful", "terrible", "horrible", "painful", "miserable", "unbearable",
     "hopeless", "disastrous", "pathetic", "worthless", "lifeless", "stupid", "ugly"],
    ["dull", "flat", "weak", "clumsy", "boring", "bland", "predictable", "slow", "tired",
     "shallow", "sloppy", "messy", "thin", "routine"],
    ["ordinary", "average", "modest", "plain", "familiar", "standard", "conventional", "mixed",
     "harmless", "simple", "quiet", "uneven", "fair"],
    ["pleasant", "charming", "solid", "enjoyable", "lovely", "sweet", "clever", "engaging", "warm",
     "fun", "nice", "good", "smart", "lively"],
    ["gorgeous", "witty", "seductive", "brilliant", "stunning", "superb", "wonderful", "beautiful",
     "flawless", "magnificent", "excellent", "remarkable", "delightful", "moving", "perfect"],
]
GRADE_ADV = [
    ["utterly", "completely", "truly", "painfully", "simply"],
    ["rather", "somewhat", "mostly", "often", "slightly"],
    ["fairly", "mostly", "reasonably", "pretty", "largely"],
    ["quite", "really", "very", "genuinely", "pretty"],
    ["truly", "beautifully", "absolutely", "simply", "deeply"],
]
GRADE_VERDICT = [
    ["a complete waste of time", "I wanted to walk out after ten minutes", "avoid it at all costs",
     "the worst film of the year", "nothing in it works"],
    ["not worth the ticket", "it never comes alive", "I was bored most of the time",
     "it could have been much better", "a missed chance"],
    ["it has good moments and bad ones", "neither great nor terrible", "fine for a quiet night in",
     "some scenes work and some do not", "you will forget it by next week, but it does no harm"],
    ["worth a look", "I had a good time", "an easy film to like", "it mostly works",
     "better than I expected"],
    ["one of the best films of the year", "a must see", "I loved every minute",
     "it will stay with you for days", "a real triumph"],
]
SST_TEMPLATES = [
    "{A} {a1}, {a2} {noun}.",
    "This {noun} is {adv} {a1}.",
    "{Part} is {a1} and {part2} is {a2}.",
    "{A} {a1} {noun} with {a2_art} {a2} ending.",
    "What {a} {a1} {noun}. {Verdict}.",
    "{Verdict}: {a} {adv} {a1} {noun}.",
    "{Part} is {adv} {a1}, and the whole {noun} feels {a2}.",
    "{A} {adv} {a1} {noun}, {verdict}.",
]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sst_example(rng: random.Random, grade: int) -> tuple[tuple[str, ...], float]:
    adj = GRADE_ADJ[grade]
    a1, a2 = rng.sample(adj, 2)
    part, part2 = rng.sample(PARTS, 2)
    verdict = rng.choice(GRADE_VERDICT[grade])
    if grade == 2 and rng.random() < 0.3:  # mixed reviews are the other way to a middle grade
        good, bad = rng.choice(GRADE_ADJ[3]), rng.choice(GRADE_ADJ[1])
        text = f"{part.capitalize()} is {good}, but {part2} is {bad}."
    else:
        template = rng.choice(SST_TEMPLATES)
        adv = rng.choice(GRADE_ADV[grade])
        first = adv if "{adv} {a1}" in template else a1
        text = template.format(
            A=article(first).capitalize(), a=article(first), a1=a1, a2=a2, a2_art=article(a2),
            adv=adv, noun=rng.choice(NOUNS), Part=part.capitalize(), part2=part2,
            Verdict=verdict[0].upper() + verdict[1:], verdict=verdict,
        )
    return (text,), float(grade)


def sst_row(rng: random.Random) -> tuple[tuple[str, ...], float]:
    (text,), grade = sst_example(rng, rng.randrange(5))
    if rng.random() < 0.12:  # raters disagree by a grade now and then; keeps scores below 100%
        grade = min(4.0, max(0.0, grade + rng.choice([-1, 1])))
    return (text,), grade


# ---- cfimdb: longer reviews, positive (1) or negative (0) ------------------------------------

NEUTRAL = ["I saw it on a rainy Sunday with my brother.", "The film runs about two hours.",
           "It is based on a novel I have not read.", "The story is set in a small town.",
           "I watched it at home last week.", "Most of it was shot in the winter.",
           "It follows a family over one long summer.", "The cast is mostly young."]


def cfimdb_row(rng: random.Random) -> tuple[tuple[str, ...], float]:
    positive = rng.random() < 0.5
    grades = [3, 4] if positive else [0, 1]
    parts = [sst_example(rng, rng.choice(grades))[0][0] for _ in range(rng.randint(2, 3))]
    if rng.random() < 0.4:  # a dissenting remark: the overall tone decides, not one word
        parts.append(sst_example(rng, 1 if positive else 3)[0][0])
        rng.shuffle(parts)
    parts.insert(rng.randrange(len(parts) + 1), rng.choice(NEUTRAL))
    return (" ".join(parts),), 1.0 if positive else 0.0


# ---- para: question pairs, reworded duplicates (1) or different questions (0) ----------------

SLOTS = {
    "skill": ["Python", "guitar", "piano", "French", "Spanish", "chess", "painting", "cooking",
              "swimming", "math", "drawing", "programming", "singing", "dancing", "physics",
              "chemistry", "German", "photography"],
    "thing": ["car", "laptop", "house", "phone", "bike", "camera", "watch", "boat", "tablet",
              "printer", "guitar", "tent", "sofa", "television"],
    "country": ["France", "Japan", "India", "Brazil", "Canada", "Italy", "Germany", "Spain",
                "Egypt", "Mexico", "China", "Russia", "Kenya", "Peru", "Norway", "Turkey"],
    "word": ["irony", "karma", "nostalgia", "empathy", "paradox", "metaphor", "entropy",
             "inflation", "democracy", "gravity", "privacy", "justice"],
    "job": ["doctor", "lawyer", "pilot", "teacher", "nurse", "engineer", "chef", "writer",
            "scientist", "dentist", "architect", "farmer", "journalist", "designer"],
    "animal": ["cat", "dog", "rabbit", "horse", "parrot", "turtle", "snake", "goat", "pig",
               "duck"],
    "shop": ["bakery", "restaurant", "shop", "cafe", "farm", "hotel", "gym", "school",
             "bookstore", "garage"],
}
INTENTS = [  # (slot kind, phrasings that all ask the same question)
    ("skill", ["How do I learn {x}?", "What is the best way to learn {x}?",
               "How can I get better at {x}?", "How should a novice start learning {x}?"]),
    ("skill", ["Is {x} hard to learn?", "How difficult is it to learn {x}?",
               "Is it difficult to learn {x} as an adult?"]),
    ("thing", ["How much does a new {x} cost?", "What is the price of a new {x}?",
               "How expensive is a new {x}?"]),
    ("thing", ["Is it worth buying a {x}?", "Should I buy a {x}?", "Is a {x} worth the money?"]),
    ("thing", ["How do I fix a broken {x}?", "How can I repair a broken {x}?",
               "What should I do when my {x} breaks?"]),
    ("country", ["What is the capital of {x}?", "Which city is the capital of {x}?",
                 "What city is the capital of {x}?"]),
    ("country", ["What are the best places to visit in {x}?", "Which places should I see in {x}?",
                 "What should a tourist see in {x}?"]),
    ("country", ["What is the history of {x}?", "Can you tell me about the history of {x}?",
                 "Where can I read about the history of {x}?"]),
    ("word", ['What does the word "{x}" mean?', 'What is the meaning of the word "{x}"?',
              'What is the definition of "{x}"?', "Can someone explain what {x} means?"]),
    ("word", ['How do I use the word "{x}" in a sentence?', 'What is a good example sentence with "{x}"?',
              'Can you show me "{x}" used in a sentence?']),
    ("job", ["How do I become a {x}?", "What does it take to become a {x}?",
             "What steps should I take to be a {x}?"]),
    ("job", ["How much does a {x} earn?", "What is the average salary of a {x}?",
             "How much money does a {x} make?"]),
    ("animal", ["How do I take care of a {x}?", "What is the best way to look after a {x}?",
                "How should I care for a pet {x}?"]),
    ("animal", ["What should I feed my {x}?", "What is the best food for a {x}?",
                "What do {x} owners feed their pets?"]),
    ("shop", ["How do I start a {x}?", "What do I need to open a {x}?",
              "How can I start my own {x}?"]),
    ("shop", ["Is owning a {x} profitable?", "Can you make good money running a {x}?",
              "How much profit does a small {x} make?"]),
]


def para_row(rng: random.Random) -> tuple[tuple[str, ...], float]:
    i = rng.randrange(len(INTENTS))
    kind, phrasings = INTENTS[i]
    x = rng.choice(SLOTS[kind])
    roll = rng.random()
    if roll < 0.45:  # duplicate: the same question in other words
        p1, p2 = rng.sample(phrasings, 2)
        return (p1.format(x=x), p2.format(x=x)), 1.0
    if roll < 0.70:  # same kind of question about something else
        y = rng.choice([v for v in SLOTS[kind] if v != x])
        return (rng.choice(phrasings).format(x=x), rng.choice(phrasings).format(x=y)), 0.0
    if roll < 0.90:  # a different question about the same thing
        others = [p for k, (kk, p) in enumerate(INTENTS) if kk == kind and k != i]
        other = rng.choice(others)
        return (rng.choice(phrasings).format(x=x), rng.choice(other).format(x=x)), 0.0
    j = rng.choice([k for k in range(len(INTENTS)) if INTENTS[k][0] != kind])
    other_kind, other = INTENTS[j]
    return (rng.choice(phrasings).format(x=x), rng.choice(other).format(x=rng.choice(SLOTS[other_kind]))), 0.0


# ---- sts: sentence pairs with graded similarity 0.0 .. 5.0 -----------------------------------

SUBJECTS = [["A man", "A guy"], ["A woman", "A lady"], ["A boy", "A young boy"],
            ["A girl", "A young girl"], ["A child", "A kid"], ["An old man", "An elderly man"],
            ["A dog", "A puppy"], ["Two men", "Two guys"], ["A chef", "A cook"]]
ACTIONS = [  # (verb forms that mean the same, objects that mean the same)
    (["playing"], ["a guitar", "the guitar"]),
    (["playing"], ["a piano", "the piano"]),
    (["riding"], ["a bike", "a bicycle"]),
    (["cutting", "slicing"], ["an onion", "some onion"]),
    (["cutting", "slicing"], ["a potato", "some potato"]),
    (["reading"], ["a book", "a novel"]),
    (["eating"], ["an apple", "a red apple"]),
    (["cooking", "making"], ["dinner", "a meal"]),
    (["driving"], ["a car", "an old car"]),
    (["painting"], ["a wall", "the wall"]),
    (["washing", "cleaning"], ["a car", "the car"]),
    (["singing"], ["a song", "a tune"]),
    (["throwing", "tossing"], ["a ball", "the ball"]),
    (["kicking"], ["a ball", "the ball"]),
    (["drinking", "sipping"], ["coffee", "some coffee"]),
]
PLACES = [["in the park", "at the park"], ["on the beach", "by the sea"],
          ["in the kitchen", "in a kitchen"], ["on the street", "on the road"],
          ["in a field", "in the grass"], ["at home", "in the house"], ["on a stage", "on stage"],
          ["in the snow", "outside in the snow"]]


def sts_sentence(rng: random.Random, s: int, a: int, obj: bool, p: int) -> str:
    verbs, objects = ACTIONS[a]
    subject = rng.choice(SUBJECTS[s])
    be = "are" if subject.startswith("Two") else "is"
    what = f" {rng.choice(objects)}" if obj else ""
    return f"{subject} {be} {rng.choice(verbs)}{what} {rng.choice(PLACES[p])}."


def sts_row(rng: random.Random) -> tuple[tuple[str, ...], float]:
    s, a, p = rng.randrange(len(SUBJECTS)), rng.randrange(len(ACTIONS)), rng.randrange(len(PLACES))
    same_s, same_p = rng.random() < 0.6, rng.random() < 0.6
    action = rng.choice(["same", "same", "verb", "other"])  # verb: same verb, other thing
    s2 = s if same_s else rng.choice([k for k in range(len(SUBJECTS)) if k != s])
    p2 = p if same_p else rng.choice([k for k in range(len(PLACES)) if k != p])
    if action == "same":
        a2 = a
    elif action == "verb":
        shared = [k for k in range(len(ACTIONS)) if k != a and set(ACTIONS[k][0]) & set(ACTIONS[a][0])]
        a2 = rng.choice(shared) if shared else rng.choice([k for k in range(len(ACTIONS)) if k != a])
        action = "verb" if shared else "other"
    else:
        a2 = rng.choice([k for k in range(len(ACTIONS)) if k != a])
    # What is done counts most, then who does it, then where; noise like disagreeing raters.
    score = {"same": 2.5, "verb": 1.0, "other": 0.0}[action] + 1.5 * same_s + 1.0 * same_p
    score = min(5.0, max(0.0, round((score + rng.gauss(0.0, 0.6)) * 5) / 5))
    return (sts_sentence(rng, s, a, True, p), sts_sentence(rng, s2, a2, True, p2)), score


# ---- writing --------------------------------------------------------------------------------

MAKERS: dict[str, Callable[[random.Random], tuple[tuple[str, ...], float]]] = {
    "sst": sst_row, "para": para_row, "sts": sts_row, "cfimdb": cfimdb_row,
}


def format_label(task: str, label: float) -> str:
    if task == "para":
        return f"{label:.1f}"  # the Quora files write 0.0 / 1.0
    if TASKS[task].kind == "regress":
        return f"{label:.1f}"
    return str(int(label))


def generate(task: str, out_dir: Path) -> None:
    seen: set[tuple[str, ...]] = set()  # texts already used: no row repeats across splits
    for split, n in zip(("train", "dev", "test-student"), SIZES[task]):
        rng = random.Random(f"powerbert-demo-{task}-{SEEDS[split]}")
        rows = []
        while len(rows) < n:
            texts, label = MAKERS[task](rng)
            if texts in seen or (len(texts) == 2 and texts[0] == texts[1]):
                continue
            seen.add(texts)
            rows.append((texts, label))
        write(task, split, rows, out_dir)


def write(task: str, split: str, rows: list, out_dir: Path) -> None:
    spec = TASKS[task]
    labelled = split != "test-student"
    columns = spec.columns if labelled else spec.columns[:-1]
    with open(out_dir / spec.file_name(split), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["", *columns])
        for i, (texts, label) in enumerate(rows):
            key = "\t".join((task, split, str(i), *texts)).encode()
            row_id = hashlib.sha1(key).hexdigest()[:25]  # like the 25-hex-digit CS224N ids
            writer.writerow([i, row_id, *texts, *([format_label(task, label)] if labelled else [])])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in MAKERS:
        generate(task, out_dir)
    print(f"wrote the demo dataset to {out_dir}")


if __name__ == "__main__":
    main()
