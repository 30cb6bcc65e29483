"""The dashboard (tui/) driven with Textual's pilot against real runs.db files: the command, the
experiments list and the experiment view. Helpers and the prepared database: tests/tui_harness.py.

Run: python -m pytest tests/test_tui.py -q

Over 300 lines on purpose: the pilot cases share one app harness and one prepared database.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from powerbert.store import Store
from powerbert.views import best_overall
from tests.tui_harness import NOW, SIZE, add_four_task_experiment, cell, make_app, open_experiment, plain, run_async, wait_for
from tui.app import create_app

pytestmark = pytest.mark.timeout(240)


# ---- the command ------------------------------------------------------------------------------


def test_command_takes_db_from_option_env_or_default(monkeypatch):
    from tui.app import parse_args

    monkeypatch.delenv("POWERBERT_DB", raising=False)
    assert str(create_app(parse_args([]).db).db.path) == "runs.db"
    monkeypatch.setenv("POWERBERT_DB", "/data/env.db")
    assert str(create_app(parse_args([]).db).db.path) == "/data/env.db"
    assert str(create_app(parse_args(["--db", "/data/opt.db"]).db).db.path) == "/data/opt.db"


def test_dashboard_starts_without_importing_torch():
    """The first screen draws at once: torch and scipy load later, in a worker thread."""
    import subprocess

    code = "import sys, tui.app; print(sorted(m for m in ('torch', 'scipy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


# ---- the experiments list ---------------------------------------------------------------------


@run_async
async def test_experiments_list_newest_first_with_best_score(db_path):
    from tui.widgets.tables import ExperimentsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExperimentsTable).row_count == 2)
        table = app.screen.query_one(ExperimentsTable)
        names = [table.get_row_at(i)[1].plain.strip() for i in range(2)]
        assert names == ["beta", "alpha"]
        with Store(db_path) as store:
            # the best overall over every task: an ensemble scheme or the all-task run
            _, best = best_overall(store, store.get_experiment("alpha"))
        row = table.get_row_at(1)
        assert [c.plain.strip() for c in row[2:6]] == ["sst,para,sts", "MiniLM", "finished", "7/7"]
        assert row[7].plain.strip() == f"{best:.4f}"


@run_async
async def test_new_experiment_in_the_db_is_added_on_top(db_path):
    from tui.widgets.tables import ExperimentsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExperimentsTable).row_count == 2)
        table = app.screen.query_one(ExperimentsTable)
        with Store(db_path) as store:
            gamma = store.create_experiment("gamma", ("sst",), {}, None, [("sst",)])
            store.update_experiment(gamma.id, created_at=NOW)
        await wait_for(pilot, lambda: table.row_count == 3, what="the new experiment")
        assert [table.get_row_at(i)[1].plain.strip() for i in range(3)] == ["gamma", "beta", "alpha"]


def _visible_lines(table) -> list[str]:
    """The table's lines as drawn: what a cut column would lose is not there."""
    return ["".join(segment.text for segment in table.render_line(y)).rstrip() for y in range(table.row_count + 1)]


@run_async
async def test_experiments_list_fits_80_columns_dropping_the_least_needed_columns(db_path):
    """A default name ('sst+para+sts-YYYYmmdd-HHMMSS') cut the best column to 'be' at 80
    columns: now the model column, then tasks, then started, go first, and what shows is whole."""
    from tui.widgets.tables import ExperimentsTable

    with Store(db_path) as store:
        gamma = store.create_experiment("sst+para+sts-20231115-011320", ("sst", "para", "sts"), {}, None, [("sst",)])
        store.update_experiment(gamma.id, created_at=NOW)
        _, best = best_overall(store, store.get_experiment("alpha"))
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExperimentsTable).row_count == 3)
        table = app.screen.query_one(ExperimentsTable)
        await wait_for(pilot, lambda: "best" in _visible_lines(table)[0], what="the best column")
        header, *rows = _visible_lines(table)
        assert header.split() == ["name", "tasks", "status", "runs", "started", "best"]  # model went
        assert rows[0].split()[:2] == ["sst+para+sts-20231115-011320", "sst,para,sts"]
        assert rows[2].split()[-1] == f"{best:.4f}"  # whole
        assert all(len(line) <= 80 for line in (header, *rows))

        await pilot.resize_terminal(60, 24)  # narrower still: tasks and started go too
        await wait_for(pilot, lambda: "tasks" not in _visible_lines(table)[0], what="a narrower table")
        header, *rows = _visible_lines(table)
        assert header.split() == ["name", "status", "runs", "best"]
        assert rows[0].split()[1:3] == ["queued", "0/1"]
        await pilot.resize_terminal(120, 24)  # and back: every column, the cursor where it was
        await wait_for(pilot, lambda: "model" in _visible_lines(table)[0], what="every column")
        assert table.cursor_key == str(gamma.id)


# ---- the experiment view ----------------------------------------------------------------------


@run_async
async def test_experiment_view_shows_runs_and_updates_cells_in_place(db_path):
    from tui.widgets.tables import RunsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        table = screen.query_one(RunsTable)
        with Store(db_path) as store:
            runs = {r.subset: r for r in store.runs(store.get_experiment("beta").id)}
        assert table.row_count == 7
        running = str(runs["para+sts"].id)
        assert cell(table, running, "status") == "running"
        # epochs read from 1: step 25 of 40 in 2 epochs is in the second; the store says 1 done
        assert cell(table, running, "progress") == "2 25/40"
        assert cell(table, str(runs["sst+para"].id), "progress") == "1 13/40"  # in its first epoch
        assert cell(table, str(runs["sst"].id), "progress") == "2 40/40"  # finished: its last epoch
        assert cell(table, running, "elapsed") == "53:20"  # NOW - started_at, on the frozen clock
        assert cell(table, running, "eta") == "32:00"  # 15 steps left at 25 steps per 3200 s
        assert cell(table, str(runs["sst+sts"].id), "run") == "! sst+sts"  # lost runs stand out

        cleared = []
        table.clear = lambda *a, **k: cleared.append(a)  # the table must never be rebuilt
        with Store(db_path) as store:
            store.update_run(runs["para+sts"].id, step=31, loss=0.4321, best_scores={"para": 0.61, "sts": 0.4})
        await wait_for(pilot, lambda: cell(table, running, "loss") == "0.432", what="the loss cell")
        assert cell(table, running, "progress") == "2 31/40"
        assert cell(table, running, "score:para") == "0.610"
        assert table.row_count == 7 and not cleared


@run_async
async def test_four_tasks_fit_80_columns_leaving_score_columns_out(db_path):
    """With four tasks the runs table ran past 80 columns and cut what it showed ('finish…',
    'devi…', '0.5…'): now the score columns that do not fit go, the last task's first; run,
    status, device, step and overall stay whole, the selected run's line under the table has
    every score, and a wider terminal shows every column."""
    from tui.widgets.tables import RunsTable

    add_four_task_experiment(db_path, db_path.parent / "runs")
    with Store(db_path) as store:
        full = store.find_run("quad/sst+para+sts+cfimdb")
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_experiment(pilot, "quad", curves=False)
        table = screen.query_one(RunsTable)
        await wait_for(pilot, lambda: table.row_count == 15 and "ETA" in _visible_lines(table)[0], what="the runs")

        def shown() -> list[str]:
            return ["".join(s.text for s in table.render_line(y)).rstrip() for y in range(table.size.height)]

        header, *rows = shown()
        assert header.split() == ["run", "status", "device", "ep", "step", "loss", "sst", "overall", "elapsed", "ETA"]
        assert not any("…" in line for line in (header, *rows)) and all(len(line) <= 80 for line in rows)
        assert rows[0].split() == ["sst", "finished", "cuda:0", "2", "40/40", "0.300", "0.420", "0.4200", "11:40", "-"]
        table.move_to(str(full.id))
        detail = screen.query_one("#run-detail")
        scores = "  ".join(f"{t} {full.best_scores[t]:.3f}" for t in ("sst", "para", "sts", "cfimdb"))
        await wait_for(pilot, lambda: f"best {scores}  overall {full.best_overall:.4f}" in " ".join(plain(detail).split("\n")),
                       what="every score under the table")
        row = next(line for line in shown() if line.startswith(" sst+para+sts+cfimdb"))
        assert row.split()[1:3] == ["running", "cuda:1"] and row.split()[-3] == f"{full.best_overall:.4f}"

        await pilot.resize_terminal(120, 24)
        await wait_for(pilot, lambda: "cfimdb" in shown()[0], what="every column")
        assert shown()[0].split() == ["run", "status", "device", "ep", "step", "loss", "sst", "para", "sts", "cfimdb",
                                      "overall", "elapsed", "ETA"]
        assert table.cursor_key == str(full.id)


NODE = "8e0c0a79dda7f3aa5b6c1d2e3f40516273849a0b1c2d3e4f5a6b7c8d"  # a Ray node id: 56 hex digits


@run_async
async def test_runs_on_ray_nodes_show_the_node_at_80_and_120_columns(db_path):
    """A run placed on a Ray node shows the node id's first 8 hex digits after its device; at 80
    columns score columns make room for it, the core columns stay and nothing is cut; a local
    experiment's table has no node column."""
    from tui.widgets.tables import RunsTable

    with Store(db_path) as store:
        beta = store.get_experiment("beta")
        for run in store.runs(beta.id):
            if run.device:  # started: placed on a node
                store.update_run(run.id, node=NODE)
        running = store.find_run("beta/para+sts")
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_experiment(pilot, "beta", curves=False)
        table = screen.query_one(RunsTable)
        await wait_for(pilot, lambda: table.row_count == 7 and "ETA" in _visible_lines(table)[0], what="the runs")
        header, *rows = _visible_lines(table)
        assert header.split()[:4] == ["run", "status", "device", "node"]
        assert {"ep", "step", "loss", "overall", "elapsed", "ETA"} <= set(header.split())
        assert "sts" not in header.split()  # a score column went to make room
        assert not any("…" in line for line in (header, *rows)) and all(len(line) <= 80 for line in (header, *rows))
        assert cell(table, str(running.id), "node") == NODE[:8]
        row = next(line for line in rows if line.startswith(" para+sts"))
        assert row.split()[1:4] == ["running", "cuda:0", NODE[:8]]

        await pilot.resize_terminal(120, 24)
        await wait_for(pilot, lambda: "sts" in _visible_lines(table)[0].split(), what="every column")
        assert _visible_lines(table)[0].split() == ["run", "status", "device", "node", "ep", "step", "loss", "sst", "para", "sts",
                                                    "overall", "elapsed", "ETA"]
        await pilot.press("escape")
        local = await open_experiment(pilot, "alpha", curves=False)
        await wait_for(pilot, lambda: local.query_one(RunsTable).row_count == 7, what="alpha's runs")
        assert "node" not in _visible_lines(local.query_one(RunsTable))[0].split()


@run_async
async def test_selected_run_reads_only_new_metric_rows(db_path):
    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        with Store(db_path) as store:
            running = store.find_run("beta/para+sts")
        screen.query_one("#runs-table").move_to(str(running.id))
        await wait_for(pilot, lambda: screen.follow.run_id == running.id and len(screen.curves.get("loss")[0]) == 25)
        seen = screen.follow.after_id
        reads = []
        store = app.db.store()
        original = store.metrics
        store.metrics = lambda run_id, after_id=0, *a, **k: reads.append((run_id, after_id)) or original(run_id, after_id, *a, **k)
        with Store(db_path) as writer:
            writer.add_metrics(running.id, [(26, 1.3, "train", "loss", 0.5), (27, 1.35, "train", "loss", 0.49)])
        await wait_for(pilot, lambda: len(screen.curves.get("loss")[0]) == 27, what="the new loss points")
        assert reads and all(after >= seen for _, after in reads)
        assert screen.curves.get("loss")[1][-2:] == [0.5, 0.49]


@run_async
async def test_failed_and_lost_runs_say_why(db_path):
    from tui.widgets.log_tail import LogTail

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        with Store(db_path) as store:
            failed = store.find_run("beta/sst+para")
        screen.query_one("#runs-table").move_to(str(failed.id))
        await wait_for(pilot, lambda: "CUDA out of memory" in plain(screen.query_one("#run-detail")))
        log = screen.query_one(LogTail)
        await wait_for(pilot, lambda: any("Traceback" in line.text for line in log.lines), what="the stored log tail")


@run_async
async def test_log_tail_is_read_incrementally(db_path, tmp_path):
    from tui.widgets.log_tail import LogTail

    with Store(db_path) as store:
        running = store.find_run("beta/para+sts")
    log_path = Path(running.out_dir) / "worker.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("device cuda:0\nstep one\n")
    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        screen.query_one("#runs-table").move_to(str(running.id))
        log = screen.query_one(LogTail)
        await wait_for(pilot, lambda: [line.text for line in log.lines] == ["device cuda:0", "step one"])
        with open(log_path, "a") as f:
            f.write("step two\npartial")  # an unfinished line waits for its newline
        await wait_for(pilot, lambda: len(log.lines) == 3)
        assert [line.text for line in log.lines][-1] == "step two"
        assert screen.follow.log_offset == len("device cuda:0\nstep one\nstep two\n")


@pytest.mark.parametrize("width", [80, 120])
@run_async
async def test_long_log_lines_wrap_in_the_log_pane(db_path, width):
    """An eval line kept its first scores only and a traceback lost its path: every line now
    wraps at the pane's width, and wraps again when the pane changes width."""
    from tui.widgets.log_tail import LogTail

    with Store(db_path) as store:
        running = store.find_run("beta/para+sts")
    log_path = Path(running.out_dir) / "worker.log"
    log_path.parent.mkdir(parents=True)
    lines = ["epoch 1 dev: sst 0.4500  para 0.4500  sts 0.4500  overall 0.4500  (best)",
             'File "/home/someone/projects/powerbert/powerbert/runner/worker.py", line 258, in run_worker',
             "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total capacity)"]
    log_path.write_text("\n".join(lines) + "\n")

    def shown(log) -> str:
        return "".join(strip.text for strip in log.lines)

    app = make_app(db_path)
    async with app.run_test(size=(width, 30)) as pilot:
        screen = await open_experiment(pilot, "beta")
        screen.query_one("#runs-table").move_to(str(running.id))
        log = screen.query_one(LogTail)
        await wait_for(pilot, lambda: len(log.texts) == 3, what="the log lines")
        for size in ((width, 30), (width + 30, 30)):
            await pilot.resize_terminal(*size)
            pane = log.scrollable_content_region.width
            await wait_for(pilot, lambda: log._wrapped_at == log.scrollable_content_region.width, what="the rewrap")
            assert pane < len(lines[0])  # the pane is narrower than the lines: they must wrap
            assert all(strip.cell_length <= pane for strip in log.lines)  # nothing sticks out
            assert log.virtual_size.width <= pane  # and nothing scrolls sideways
            # every character shows, in order (a word longer than the pane is folded across lines)
            assert "".join(shown(log).split()) == "".join("".join(lines).split())


@run_async
async def test_stop_and_delete_from_the_keyboard(db_path):
    from tui.screens.confirm import ConfirmScreen
    from tui.widgets.tables import RunsTable

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        table = screen.query_one(RunsTable)
        with Store(db_path) as store:
            running = store.find_run("beta/para+sts")
            failed = store.find_run("beta/sst+para")
        table.move_to(str(running.id))
        await wait_for(pilot, lambda: screen.follow.run_id == running.id)
        await pilot.press("d")  # refused: it is running
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("s")  # no live worker to signal: the status itself says stopped
        await wait_for(pilot, lambda: cell(table, str(running.id), "status") == "stopped", what="stopped")

        # the failed run's folder: deleting the run removes it, and the question says how much
        folder = Path(failed.out_dir)
        (folder / "best").mkdir(parents=True)
        (folder / "best.safetensors").write_bytes(b"\0" * 1_500_000)
        (folder / "worker.log").write_text("device cuda:0\n")
        sibling = Path(running.out_dir)
        sibling.mkdir(parents=True)
        (sibling / "worker.log").write_text("still here\n")
        table.move_to(str(failed.id))
        await wait_for(pilot, lambda: screen.follow.run_id == failed.id)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = app.screen.question
        assert "files" in question and "1.5 MB" in question and str(folder) in question
        assert "stay" not in question
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 6, what="the deleted row to go")
        await wait_for(pilot, lambda: not folder.exists(), what="the run's folder to go")
        assert (sibling / "worker.log").exists()  # only that run's folder
        with Store(db_path) as store:
            assert [r.subset for r in store.runs(store.get_experiment("beta").id)].count("sst+para") == 0

        lost = runs_by_subset(db_path)["sst+sts"]  # no folder: the rows go, 0 B freed
        table.move_to(str(lost.id))
        await wait_for(pilot, lambda: screen.follow.run_id == lost.id)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "frees 0 B" in app.screen.question
        await pilot.press("n")  # and no means no
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert "sst+sts" in runs_by_subset(db_path)


def runs_by_subset(db_path) -> dict:
    with Store(db_path) as store:
        return {r.subset: r for r in store.runs(store.get_experiment("beta").id)}


@run_async
async def test_help_lists_the_keys_of_the_screen(db_path):
    from tui.screens.help import HelpScreen

    app = make_app(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_experiment(pilot, "beta")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        from tui.screens.help import key_rows

        rows = {description: keys for keys, description in key_rows(app.screen.under)}
        assert rows["Stop the run"] == "s" and rows["Stop every run"] == "S / shift+s"
        assert {"Back", "Stop the run", "Resume the run", "Delete", "Results", "Playground", "Help", "Quit"} <= set(rows)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))


@run_async
async def test_gpu_panel_shows_each_device_and_hides_without_one(db_path):
    from tui.gpu import GIB, GpuStat

    gpus = [GpuStat(0, "NVIDIA H100 80GB HBM3", 12.5 * GIB, 80 * GIB, 45.0), GpuStat(1, "NVIDIA H100 80GB HBM3", 0, 80 * GIB, None)]
    app = make_app(db_path, gpu_probe=lambda: gpus)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        panel = screen.query_one("#gpu-panel")
        await wait_for(pilot, lambda: panel.display)
        lines = plain(panel).splitlines()
        assert lines[0].startswith("cuda:0 H100 80GB HBM3 12.5/80.0 GiB ██") and lines[0].endswith("45%")
        assert lines[1].startswith("cuda:1") and "0.0/80.0 GiB" in lines[1]
    app = make_app(db_path)  # no GPU: no panel
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_experiment(pilot, "beta")
        assert not screen.query_one("#gpu-panel").display


def test_gpu_probe_reads_nvidia_smi(monkeypatch):
    import subprocess

    from tui import gpu

    class Done:
        stdout = "0, NVIDIA H200, 1024, 143771, 7\n1, NVIDIA H200, 0, 143771, [N/A]\n"

    monkeypatch.setattr(gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu.subprocess, "run", lambda *a, **k: Done())
    stats = gpu.probe_gpus()
    assert [(s.index, s.name, s.used, s.utilisation) for s in stats] == [
        (0, "NVIDIA H200", 1024 * 2**20, 7.0), (1, "NVIDIA H200", 0.0, None)]

    def broken(*a, **k):
        raise subprocess.CalledProcessError(9, "nvidia-smi")

    monkeypatch.setattr(gpu.subprocess, "run", broken)
    monkeypatch.setitem(sys.modules, "torch", None)  # and no torch to ask
    assert gpu.probe_gpus() == []


