"""Case 15: what people type into `powerbert predict` and the dashboard's playground: empty,
whitespace, 10,000 characters, emoji, right-to-left text, control characters. Each gets an
answer or a one-line message, never a traceback; long input is truncated with a notice.

The real command runs as its own process on the experiment `hostile_experiment` trained; the
playground runs in the real app through Textual's pilot. (Case 14, malformed task files, is in
tests/test_data.py, tests/test_cli_train.py, test_files.py and test_hostile_names_and_modes.py.)
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.faults.helpers import CLI, cli_env
from tests.fixtures import write_task_file

LONG = ("a truly great film . " * 500)[:10_000]
EMOJI = "great 😀🎬👍🏽 movie !"
RTL = "שלום עולם סרט נהדר"  # Hebrew: right-to-left
CONTROL = "good\x01\x1b[31m\x7f film\r\n\x0b"
MIXED = f"\u202e{RTL} {EMOJI} {CONTROL} {LONG}"


def _predict_processes(db, name: str, inputs: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """Every `powerbert predict` at once (each is a fresh process importing torch)."""
    env = {**cli_env(db), "COLUMNS": "200"}
    procs = {key: subprocess.Popen([*CLI, "predict", "--experiment", name, "--device", "cpu", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for key, args in inputs.items()}
    done = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.mark.timeout(300)
def test_15_predict_answers_or_explains_every_kind_of_input(hostile_experiment, tmp_path):
    rows = [["e1", EMOJI], ["r1", RTL], ["c1", CONTROL.replace("\r\n", " ").replace("\x0b", " ")], ["l1", LONG], ["m1", MIXED.replace("\r\n", " ").replace("\x0b", " ")]]
    source = write_task_file(tmp_path / "ids-sst-test-student.csv", ["id", "sentence"], rows)
    results = _predict_processes(hostile_experiment.db, hostile_experiment.name, {
        "empty": [""],
        "whitespace": [" \t  "],
        "mixed": [MIXED],
        "file": ["--task", "sst", "--input", str(source), "--output", "-", "--scheme", "weighted"],
    })
    for key, result in results.items():
        assert "Traceback" not in result.stderr, (key, result.stderr)
    for key in ("empty", "whitespace"):
        assert results[key].returncode == 1
        assert results[key].stderr.count("error:") == 1 and "empty" in results[key].stderr, results[key].stderr
    mixed = results["mixed"]
    assert mixed.returncode == 0, mixed.stderr
    said = " ".join((mixed.stdout + mixed.stderr).split())
    assert "truncated" in said and "weighted" in said
    lines = results["file"].stdout.splitlines()
    assert results["file"].returncode == 0, results["file"].stderr
    assert lines[0] == "id\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["e1", "r1", "c1", "l1", "m1"]
    assert all(line.split("\t")[1] in {"0", "1", "2", "3", "4"} for line in lines[1:])


@pytest.mark.timeout(300)
def test_15_the_playground_answers_or_explains_every_kind_of_input(hostile_experiment):
    from tui.app import create_app
    from tui.screens.playground import PlaygroundScreen

    async def wait_for(pilot, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except Exception:  # noqa: BLE001 - widgets not there yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            await pilot.pause(0.05)

    def shown(widget) -> str:
        import io

        from rich.console import Console

        console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
        console.print(widget.content)
        return console.export_text()

    async def scenario():
        app = create_app(str(hostile_experiment.db), gpu_probe=lambda: [], poll_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.screen.query_one("#experiments-table").row_count == 1, 30, "the experiments table")
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, PlaygroundScreen), 30, "the playground")
            screen = app.screen
            await wait_for(pilot, lambda: screen.loaded is not None, 120, "the models to load")
            status, output = screen.query_one("#play-status"), screen.query_one("#play-output")
            for text, expect in [("", "type a sentence"), (" \t  ", "type a sentence"), (EMOJI, "sst"), (RTL, "sst"),
                                 (CONTROL, "sst"), (LONG, "truncated"), ("\x01\x02\x03", "control characters")]:
                answered = screen.answered
                screen.query_one("#first").value = text
                screen.query_one("#second").value = ""
                screen.query_one("#first").focus()
                await pilot.press("enter")
                if expect == "type a sentence":
                    assert expect in shown(status), repr(text)
                    continue
                await wait_for(pilot, lambda: screen.answered > answered, 60, f"an answer to {text[:20]!r}")  # noqa: B023 - awaited here
                assert expect in shown(output) + shown(status), (repr(text[:40]), shown(output))
            assert screen.is_attached and app.is_running

    asyncio.run(scenario())
