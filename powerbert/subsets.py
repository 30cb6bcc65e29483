"""Which subsets of the tasks an experiment trains: the whole power set, or the part you choose.

The power set of T tasks is 2^T - 1 runs (15 for four tasks, 63 for six). `--subsets` takes
comma-separated parts, combined:

  all      every non-empty subset (the default)
  singles  one run per task (what the single-model ensemble uses)
  pairs    every subset of two tasks
  full     the one run on every task
  upto:K   every subset of at most K tasks
  a+b      one subset by name, tasks joined with '+' (sst, sst+para, ...)

`singles,full` trains T + 1 runs. The result is in power-set order (singles first, then pairs,
..., the full set last), each subset once.
"""

from __future__ import annotations

from powerbert.errors import ConfigError
from powerbert.tasks import power_set, subset_name

KEYWORDS = ("all", "singles", "pairs", "full", "upto:K")


def select_subsets(tasks: tuple[str, ...], spec: str | None) -> list[tuple[str, ...]]:
    """The subsets of `tasks` that `spec` names; ConfigError naming the part it cannot read."""
    every = power_set(tasks)
    if spec is None or not spec.strip():
        return every
    chosen: set[tuple[str, ...]] = set()
    by_name = {subset_name(s): s for s in every}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            chosen.update(every)
        elif part == "singles":
            chosen.update(s for s in every if len(s) == 1)
        elif part == "pairs":
            chosen.update(s for s in every if len(s) == 2)
        elif part == "full":
            chosen.add(every[-1])
        elif part.startswith("upto:"):
            k = part[len("upto:"):]
            if not k.isdigit() or int(k) < 1:
                raise ConfigError(f"--subsets '{part}': expected upto:K with K a whole number of at least 1")
            chosen.update(s for s in every if len(s) <= int(k))
        else:
            names = tuple(n.strip() for n in part.split("+"))
            unknown = [n for n in names if n not in tasks]
            if unknown:
                raise ConfigError(
                    f"--subsets '{part}': {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among the tasks "
                    f"({', '.join(tasks)}): expected {', '.join(KEYWORDS)} or subsets such as {subset_name(tasks[:2])}"
                )
            if len(set(names)) != len(names):
                raise ConfigError(f"--subsets '{part}': a task named twice")
            chosen.add(by_name[subset_name(names)])
    if not chosen:
        raise ConfigError(f"--subsets '{spec}': names no subset: expected {', '.join(KEYWORDS)} or subset names")
    return [s for s in every if s in chosen]
