"""Benchmark 3: ensemble prediction over a dev file, and the playground's latency for one pair.

    python bench/ensemble_predict.py                       # builds the experiment once (cached)
    python bench/ensemble_predict.py --experiment NAME --db runs.db   # use a finished experiment

A finished seven-model experiment (sst, para, sts) of the default MiniLM BERT: with no
--experiment, one is trained in-process with tiny settings (epochs=1, max_train=32, dev files cut
to 200 rows so the ensemble weights are quick to get) and kept under $POWERBERT_BENCH_CACHE.
Real checkpoints, real weights: only their quality is tiny, not their size.

Part 1, a whole dev file (sst and sts by default): `powerbert predict --input`'s library call,
powerbert.inference.predict.predict_file(loaded, task, file, "weighted"), against a naive reference that,
for every (model, task) pair of the ensemble, tokenises the file again (the model's pair mode)
and runs the model over it in file order, batches of 64 padded to their longest row, then
combines the outputs with the same weights. Same loaded models, same process, interleaved;
PowerBERT at its default precision (each run's training precision, the one it recorded:
the one that reproduces the stored dev outputs), the reference in fp32 as naive code would
(`--precision fp32` puts both in fp32). Reported: rows per second of each, and the ratio.
Target >= 1.5x.

Part 2, the playground: predict_sentences(loaded, s1, s2) (every model and every scheme of the
pair tasks para and sts) against the sum of the bare forward passes it contains (for every
model and pair task: MultitaskBert.task_outputs on the pre-tokenised pair, under inference mode
and the same autocast as the product's side).
Target <= 1.0x: sharing work across tasks must pay for all the bookkeeping.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

import common

TARGET_FILE = 1.5
TARGET_PLAYGROUND = 1.0
BATCH = 64
EXPERIMENT = "bench-seven"
BUILD_VERSION = 1
PAIR = ("How do I learn to play the guitar quickly?", "What is the fastest way to learn guitar?")


def build_experiment(root: Path) -> Path:
    """Train the seven runs in-process (minutes, once) and evaluate the ensembles."""
    from powerbert.config import TrainConfig
    from powerbert.runner import experiments, results
    from powerbert.runner.worker import run_worker
    from powerbert.store import ExperimentStatus, Store

    db = root / "runs.db"
    if (root / f"ready-v{BUILD_VERSION}").exists():
        return db
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    config = TrainConfig(tasks=("sst", "para", "sts"), data_dir=str(common.trimmed_data(root / "data")), epochs=1,
                         max_train=32, batch_size=16, checkpoint_every_s=1e9)
    start = time.perf_counter()
    with Store(db) as store:
        exp = experiments.create_experiment(store, config, name=EXPERIMENT, out_root=root / "runs")
        for run in store.runs(exp.id):
            handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
            try:
                if run_worker(str(db), run.id, "cpu") != 0:
                    raise SystemExit(f"training {run.subset} failed: {store.get_run(run.id).error}")
            finally:
                signal.signal(signal.SIGINT, handlers[0])
                signal.signal(signal.SIGTERM, handlers[1])
            print(f"   trained {run.subset} ({time.perf_counter() - start:.0f} s)", flush=True)
        results.ensemble_experiment(store, exp.id)
        store.update_experiment(exp.id, status=ExperimentStatus.FINISHED)
    (root / f"ready-v{BUILD_VERSION}").touch()
    return db


class NaiveReference:
    """For every (model, task) pair: tokenise the file again, run the model in file order."""

    def __init__(self, loaded, task: str, path: Path):
        from powerbert.data.files import read_task_file

        self.loaded, self.task = loaded, task
        self.data = read_task_file(task, path)
        self.weights = loaded.weights[("weighted", task)]

    def run(self, limit: int | None = None) -> int:
        import torch

        from powerbert.data.batching import EncodedTask, encode_texts
        from powerbert.results.ensemble import combine
        from powerbert.tasks import TASKS

        spec = TASKS[self.task]
        examples = self.data.examples[:limit]
        outputs = {}
        for name, member in self.loaded.models.items():
            if self.task not in member.config.tasks or self.weights.get(name, 0) <= 0:
                continue
            model, max_length = member.model, member.config.max_length
            firsts = [ex.texts[0] for ex in examples]
            seconds = [ex.texts[1] for ex in examples] if spec.is_pair else None
            mode = model.head_config.pair_mode(self.task) if spec.is_pair else "bi"
            tok = self.loaded.tokenizer
            if spec.is_pair and mode == "cross":
                first, types = encode_texts(tok, firsts, max_length, seconds)
                second = None
            else:
                first, types = encode_texts(tok, firsts, max_length)
                second = encode_texts(tok, seconds, max_length)[0] if spec.is_pair else None
            encoded = EncodedTask(self.task, [ex.id for ex in examples], None, first, types, second, tok.pad_token_id, max_length)
            parts = []
            with torch.inference_mode():
                for start in range(0, len(encoded), BATCH):
                    batch = encoded.collate(list(range(start, min(start + BATCH, len(encoded)))))
                    parts.append(model.task_outputs(batch).float().numpy())  # fp32, as the naive code would
            import numpy as np

            outputs[name] = np.concatenate(parts)
        combine(self.task, outputs, self.weights)
        return len(examples)


def part_file(loaded, task: str, path: Path, repeats: int) -> float:
    from powerbert.inference.predict import predict_file

    reference = NaiveReference(loaded, task, path)
    rows = len(reference.data.examples)

    def product() -> float:
        start = time.perf_counter()
        n = len(predict_file(loaded, task, path, "weighted"))
        return n / (time.perf_counter() - start)

    def naive() -> float:
        start = time.perf_counter()
        n = reference.run()
        return n / (time.perf_counter() - start)

    members = [m for m, w in reference.weights.items() if w > 0]
    print(f"-- {task}: {path.name}, {rows} rows, weighted ensemble of {len(members)} models, {repeats} rounds", flush=True)
    # Warm-up on a few rows: first-call costs of every model and of the tokenizer.
    from powerbert.inference.predict import predict_texts

    spec_rows = [ex.texts if len(ex.texts) == 2 else ex.texts[0] for ex in reference.data.examples[:16]]
    predict_texts(loaded, task, spec_rows, "weighted")
    reference.run(limit=16)
    results = common.interleaved({"powerbert predict": product, "naive reference": naive}, repeats)
    for name, values in results.items():
        print(f"   {name:<18} {common.median(values):8.1f} rows/s  (rounds {common.spread(values)})", flush=True)
    return common.median(results["powerbert predict"]) / common.median(results["naive reference"])


def part_playground(loaded, repeats: int) -> float:
    import torch

    from powerbert.data.batching import EncodedTask, encode_texts
    from powerbert.inference.predict import predict_sentences
    from powerbert.model.device import autocast_for
    from powerbert.tasks import TASKS

    pair_tasks = [t for t in loaded.tasks if TASKS[t].is_pair]
    bare = []  # (model, batch) for every model and pair task it was trained on
    tok = loaded.tokenizer
    for member in loaded.models.values():
        for task in pair_tasks:
            if task not in member.config.tasks:
                continue
            mode = member.model.head_config.pair_mode(task)
            if mode == "cross":
                first, types = encode_texts(tok, [PAIR[0]], member.config.max_length, [PAIR[1]])
                enc = EncodedTask(task, ["x"], None, first, types, None, tok.pad_token_id, member.config.max_length)
            else:
                first = encode_texts(tok, [PAIR[0]], member.config.max_length)[0]
                second = encode_texts(tok, [PAIR[1]], member.config.max_length)[0]
                enc = EncodedTask(task, ["x"], None, first, None, second, tok.pad_token_id, member.config.max_length)
            bare.append((member.model, enc.collate([0])))

    def product() -> None:
        predict_sentences(loaded, *PAIR)

    def forwards() -> None:
        # the same autocast as the product's side: the ratio is the bookkeeping, not the dtype
        with torch.inference_mode(), autocast_for(loaded.device, loaded.precision):
            for model, batch in bare:
                model.task_outputs(batch)

    print(f"-- playground: one pair through {len(loaded.models)} models' {', '.join(pair_tasks)} and every scheme; "
          f"{len(bare)} bare forward passes; {repeats} rounds", flush=True)
    for _ in range(3):
        product(), forwards()
    results = common.interleaved({"predict_sentences": product, "bare forwards": forwards}, repeats)
    for name, values in results.items():
        print(f"   {name:<18} {1000 * common.median(values):8.1f} ms  (rounds {1000 * min(values):.1f}..{1000 * max(values):.1f})", flush=True)
    return common.median(results["predict_sentences"]) / common.median(results["bare forwards"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=None, help="a finished seven-model experiment in --db (default: build one)")
    parser.add_argument("--db", type=Path, default=Path("runs.db"), help="runs.db of --experiment")
    parser.add_argument("--tasks", default="sst,sts", help="dev files to predict: sst, para, sts")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per side over each file")
    parser.add_argument("--playground-repeats", type=int, default=30)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="load_experiment_models(precision=...): PowerBERT's side of the files, both sides of the playground "
                             "(default: the product's, each run's training precision)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of both sides (default 1: on a busy machine a second thread makes every op a lottery; 0 = torch's own)")
    args = parser.parse_args(argv)

    import torch

    from powerbert.inference.loading import load_experiment_models
    from powerbert.store import Store
    from powerbert.tasks import TASKS

    if args.threads:
        torch.set_num_threads(args.threads)
    common.header("bench 3: ensemble prediction of a dev file, and the playground's latency")
    if args.experiment is None:
        db, experiment = build_experiment(common.CACHE_DIR / "seven-model-experiment"), EXPERIMENT
    else:
        db, experiment = args.db, args.experiment
    with Store(db) as store:
        loaded = load_experiment_models(store, experiment, "cpu", precision=args.precision)
    print(f"   {len(loaded.models)} models loaded from {db} ({loaded.precision}); missing: {loaded.missing or 'none'}", flush=True)
    ratios = {}
    for task in args.tasks.split(","):
        path = common.DATA_DIR / TASKS[task].file_name("dev")
        ratios[task] = part_file(loaded, task, path, args.repeats)
        print(f"   {task}: {ratios[task]:.2f}x the naive reference", flush=True)
    playground = part_playground(loaded, args.playground_repeats)
    print(f"   playground: {playground:.3f}x the sum of the bare forward passes (target <= {TARGET_PLAYGROUND:g}x) "
          f"{'MET' if playground <= TARGET_PLAYGROUND else 'MISSED'}", flush=True)
    code = common.verdict("dev-file prediction, powerbert predict / naive reference (worst task)",
                          min(ratios.values()), TARGET_FILE, at_least=True)
    return code if playground <= TARGET_PLAYGROUND else 1


if __name__ == "__main__":
    sys.exit(main())
