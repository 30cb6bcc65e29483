"""Running experiments: creating, stopping and resuming them (experiments.py), the detached
supervisor that starts one worker per run (supervisor.py), the worker that trains a run and
records it in runs.db (worker.py), the liveness check (liveness.py), and the baselines.

The flow is one way: front ends -> experiments -> supervisor -> worker -> training -> runs.db.
"""
