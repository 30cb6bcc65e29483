"""Training one subset of tasks: the loop (loop.py: `train_subset`), one optimisation step and
its optimiser and schedule (step.py), the task streams that feed it batches (streams.py), and
the callbacks through which it reports (callbacks.py). It knows nothing of runs.db.

Used by `powerbert train` in the foreground and by the runner's worker process.
"""
