"""A Ray run's actor without Ray: `RemoteRun` driven the way the supervisor drives it.

The actor buffers every write it would make to runs.db; a poll hands them over and says how
far the supervisor has written. Here the test is the supervisor: it writes the events through
a real store, in order, and either keeps polling (the run finishes, its curve whole) or stops
polling (the lease runs out: the run ends without writing another checkpoint, which is what
keeps an actor that outlived its node from overwriting a resumed run's checkpoint).
"""

from __future__ import annotations

import time
from pathlib import Path

from powerbert.runner import experiments
from powerbert.runner.cluster.actor import RemoteRun
from powerbert.runner.cluster.node_check import versions
from powerbert.runner.worker import run_config
from powerbert.store import RunStatus, Store
from tests.faults.helpers import tiny_config, wait_until


def claimed_run(tmp_path, tiny_model_dir, toy_data_dir, **config):
    store = Store(tmp_path / "runs.db")
    exp = experiments.create_experiment(store, tiny_config(tiny_model_dir, toy_data_dir, **config), name="remote",
                                        out_root=tmp_path / "runs", subsets=[("sst",)], backend="ray")
    run = store.claim_next_queued(exp.id)
    Path(run.out_dir).mkdir(parents=True)
    return store, run


def actor_for(store, run, lease_s=7.0) -> RemoteRun:
    return RemoteRun(run, run_config(store, run).to_dict(), None, threads=1, keep_resume_state=True,
                     expected_versions=versions(), lease_s=lease_s)


def write_events(store: Store, answer: dict) -> int:
    last = 0
    for seq, method, args, kwargs in answer["events"]:
        getattr(store, method)(*args, **kwargs)
        last = seq
    return last


def test_a_polled_actor_trains_and_its_events_make_the_run(tmp_path, tiny_model_dir, toy_data_dir):
    store, run = claimed_run(tmp_path, tiny_model_dir, toy_data_dir, epochs=3)
    actor = actor_for(store, run)
    where = actor.ready()
    assert where["problem"] is None and where["device"] == "cpu" and where["pid"] > 0
    assert store.mark_run_started(run.id, where["pid"], where["pid_start_time"], where["host"], where["device"], node=where["node"])
    actor.start()
    acked, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = actor.poll(acked)
        acked = write_events(store, answer) or acked
        if answer["done"]:
            break
        time.sleep(0.05)
    assert answer["done"] and answer["exit_code"] == 0
    ended = store.get_run(run.id)
    assert ended.status == RunStatus.FINISHED and ended.best_overall is not None and ended.node == where["node"]
    steps = [m.step for m in store.metrics(run.id) if m.split == "train" and m.name == "loss"]
    assert steps == list(range(1, ended.step + 1)) and ended.step == ended.total_steps
    assert set(store.dev_outputs(run.id)) == {"sst"}
    assert "epoch 3 dev" in (Path(run.out_dir) / "worker.log").read_text() and "epoch 3 dev" in ended.log_tail
    # Outside Ray the actor asks nothing of Ray: its calls would have started a local cluster
    # here (bound to the machine's address, outside any namespace).
    import ray

    assert not ray.is_initialized()


def test_an_actor_nobody_polls_stops_at_its_lease_without_writing_a_checkpoint(tmp_path, tiny_model_dir, toy_data_dir):
    store, run = claimed_run(tmp_path, tiny_model_dir, toy_data_dir, epochs=50)
    actor = actor_for(store, run, lease_s=1.0)
    actor.start()  # and never polled: the supervisor gave it up (declared it lost)
    wait_until(lambda: actor.exit_code is not None, 120, "the unpolled actor to end")
    out = Path(run.out_dir)
    assert not (out / "last.safetensors").exists() and not (out / "best.safetensors").exists()
    assert actor.exit_code == 1
    finals = [e for e in actor.poll(0)["events"] if e[1] == "finish_run"]
    assert finals and "LeaseExpired" in finals[-1][3]["error"], finals


def test_a_resume_checkpoint_waits_until_the_supervisor_has_written_what_came_before(tmp_path, tiny_model_dir, toy_data_dir):
    store, run = claimed_run(tmp_path, tiny_model_dir, toy_data_dir, epochs=2)
    actor = actor_for(store, run, lease_s=30.0)
    actor.start()
    out = Path(run.out_dir)
    # Polled but never acknowledged: the first resume checkpoint (after step 1) must wait.
    events, deadline = [], time.monotonic() + 5
    while time.monotonic() < deadline:
        events += actor.poll(0)["events"]
        time.sleep(0.1)
    assert any(e[1] == "add_metrics" for e in events), "the metrics reached the supervisor"
    assert not (out / "last.safetensors").exists(), "checkpoint written before the metrics were in runs.db"
    acked = write_events(store, {"events": events})
    actor.poll(acked)
    wait_until(lambda: (out / "last.safetensors").exists(), 30, "the checkpoint once the supervisor has written the metrics", 0.05)
    actor.stop()
    while actor.exit_code is None:  # the stop's own checkpoint waits for its acknowledgement too
        acked = write_events(store, actor.poll(acked)) or acked
        time.sleep(0.05)
    write_events(store, actor.poll(acked))
    assert store.get_run(run.id).status == RunStatus.STOPPED
