"""How often does PCGrad change a step? Each multitask subset of the `best` recipe trained from
the real files with PCGrad, counting the steps where two tasks' gradients conflicted.

    python bench/pcgrad_conflicts.py                 # one epoch of `best` (250 steps) per subset, ~10 min
    python bench/pcgrad_conflicts.py --steps 100 --subsets sst,para

PCGrad projects a task's gradient only where it points against another's (a negative dot
product over all the shared encoder's parameters, as in Yu et al.); in a step without such a
conflict it is exactly the sum of the task gradients. So the share of steps with a conflict, and
how far the projections move the combined gradient when they happen, bound how far `--set
surgery=sum` can move a run. Each subset trains as `powerbert run --profile best --surgery
pcgrad` trains it (its rows drawn at random per pass, lr 1e-4 with 10% warm-up then linear decay
over the whole run's steps, batch 16, max length 96, its experiment seed), one process, the
product's TrainStep. Printed per subset and per window of steps: how many steps
had at least one conflict; then the projections made, the median cosine of two tasks' gradients
where they conflicted, and the median and largest change PCGrad made to the combined gradient
(|PCGrad - sum| / |sum|, over the steps with a conflict; with `balance=norm`, both sides
balanced), and each task's median gradient norm over the shared encoder before any balancing
(how much of a plain sum's step each task's loss drives). The figures come from the Gram matrix
PCGrad builds each step, read by wrapping `surgery.conflict_weights` (the product's own code
runs unchanged).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import common

WINDOW = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(common.DATA_DIR))
    parser.add_argument("--steps", type=int, default=250, help="steps per subset (one epoch of `best` is 250)")
    parser.add_argument("--subsets", default="sst,para;sst,sts;para,sts;sst,para,sts",
                        help="multitask subsets to train, ';' between subsets, ',' between tasks")
    parser.add_argument("--balance", choices=("none", "norm"), default=None,
                        help="the balance setting to train with (default: the best profile's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's own)")
    args = parser.parse_args(argv)
    subsets = [tuple(s.split(",")) for s in args.subsets.split(";")]
    for subset in subsets:
        if len(subset) < 2 or not set(subset) <= {"sst", "para", "sts"}:
            parser.error(f"--subsets: '{','.join(subset)}' is not a multitask subset of sst, para, sts")

    import torch

    from powerbert.config import run_seed
    from powerbert.data.batching import encode_task
    from powerbert.data.files import load_split
    from powerbert.model import surgery
    from powerbert.model.device import tune_cpu_runtime
    from powerbert.model.multitask import build_model, load_tokenizer
    from powerbert.model.surgery import PCGrad
    from powerbert.profiles import resolve_config
    from powerbert.training.step import TrainStep, make_optimizer, make_schedule
    from powerbert.training.streams import TaskStream

    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_runtime()
    common.header(f"PCGrad conflicts: {args.steps} steps of each multitask subset of `best`")
    base = resolve_config("best", {"data_dir": args.data_dir, "skip_bad_rows": True})
    tokenizer = load_tokenizer(base.model)
    encoded = {}
    for task in sorted({t for s in subsets for t in s}):
        data = load_split(task, args.data_dir, "train", skip_bad_rows=True)
        encoded[task] = encode_task(data, tokenizer, pair_mode=base.heads.pair_mode(task), max_length=base.max_length)
    device = torch.device("cpu")
    seen: list[tuple[list[float], float]] = []  # per step: conflicting pairs' cosines, relative change
    norms_seen: list[list[float]] = []  # per step: each task's shared-gradient norm, in subset order
    project = surgery.conflict_weights

    def recording(grads, rng, **options):
        weights, conflicts = project(grads, rng, **options)
        # The same step without projections (balanced too, if the recipe balances): what PCGrad
        # changed is the difference between the two combinations of the task gradients.
        plain, _ = project(grads, rng, **{**options, "project": False})
        gram = (grads @ grads.T).double()
        change = ((weights - plain) @ gram @ (weights - plain)).clamp(min=0).sqrt() / (plain @ gram @ plain).sqrt()
        norms = gram.diagonal().sqrt()
        cosines = gram / torch.outer(norms, norms)
        pairs = [float(cosines[i, j]) for i in range(len(gram)) for j in range(i + 1, len(gram)) if cosines[i, j] < 0]
        seen.append((pairs, float(change)))
        norms_seen.append(norms.tolist())
        return weights, conflicts

    surgery.conflict_weights = recording
    for subset in subsets:
        config = run_seed(resolve_config("best", {"data_dir": args.data_dir, "tasks": subset, "surgery": "pcgrad", "balance": args.balance}), ("sst", "para", "sts"))
        torch.manual_seed(config.seed)
        streams = {t: TaskStream(encoded[t], config.batch_size, config.seed, config.max_train, config.bucket_window) for t in subset}
        model = build_model(config.model, config.tasks, config.heads).train()
        optimizer = make_optimizer(model, config)
        scheduler = make_schedule(optimizer, config, config.epochs * max(s.batches_per_pass for s in streams.values()))
        pcgrad = PCGrad(config.seed, balance=config.balance == "norm")
        train_step = TrainStep(model, optimizer, pcgrad, config, device)
        windows, conflicted, before = [], 0, 0
        seen.clear()
        norms_seen.clear()
        for step in range(args.steps):
            train_step({t: s.batch(step) for t, s in streams.items()}, step)
            scheduler.step()
            now = pcgrad.conflicts
            conflicted, before = conflicted + (now > before), now
            if (step + 1) % WINDOW == 0 or step + 1 == args.steps:
                windows.append((conflicted, step % WINDOW + 1))
                conflicted = 0
        total = sum(c for c, _ in windows)
        shown = " ".join(f"{c}/{n}" for c, n in windows)
        cosines = [c for pairs, _ in seen for c in pairs]
        changes = [change for pairs, change in seen if pairs]
        print(f"   {'+'.join(subset):13s} steps with a conflict, per {WINDOW}: {shown}; "
              f"all {total}/{args.steps} ({100 * total / args.steps:.0f}%), {pcgrad.conflicts} projections", flush=True)
        if changes:
            print(f"   {'':13s} conflicting pairs' cosine: median {statistics.median(cosines):.3f}, lowest {min(cosines):.3f}; "
                  f"|PCGrad - sum| / |sum|: median {statistics.median(changes):.3f}, largest {max(changes):.3f}", flush=True)
        medians = [statistics.median(step[i] for step in norms_seen) for i in range(len(subset))]
        shown_norms = ", ".join(f"{t} {m:.3g} ({m / min(medians):.1f}x)" for t, m in zip(subset, medians))
        print(f"   {'':13s} median gradient norm over the shared encoder: {shown_norms}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
