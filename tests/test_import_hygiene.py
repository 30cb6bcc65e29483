"""Import hygiene, each check in a fresh interpreter:

- the headless core never imports the dashboard: every powerbert module is imported and textual
  must not appear in sys.modules (as harlequin checks its core);
- only the Ray backend imports ray;
- commands that neither train nor predict (`status`, `list`, `stop`, `resume`, `--help`) never
  import torch, transformers or scipy, which cost them a second or more each.
"""

import ast
import pkgutil
import subprocess
import sys
import time

import pytest

import powerbert
from powerbert.config import TrainConfig
from powerbert.runner import experiments
from powerbert.store import RunStatus, Store

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(powerbert.__path__, "powerbert.")
    if not m.name.endswith(("__main__", ".generate"))
)
HEAVY = ("torch", "transformers", "scipy")


def imported_in_a_fresh_python(imports: str, unwanted: str) -> subprocess.CompletedProcess:
    """Run the `imports` code in a fresh interpreter, then fail (exit 1, printing the first of
    them) if a module `m` of sys.modules meets the `unwanted` expression."""
    code = (
        "import importlib, sys\n"
        f"{imports}"
        f"bad = sorted(m for m in sys.modules if {unwanted})\n"
        "print(bad[:5])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_core_modules_do_not_import_textual():
    result = imported_in_a_fresh_python(
        f"for name in {MODULES!r}:\n    importlib.import_module(name)\n",
        "m == 'textual' or m.startswith(('textual.', 'tui'))",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(MODULES) > 10


def test_powerbert_and_the_local_backend_never_import_ray():
    """Ray is the Ray backend's alone: `import powerbert`, the CLI, the supervisor with its local
    backend and the worker leave it out of sys.modules (pip install 'powerbert[ray]' adds it)."""
    result = imported_in_a_fresh_python(
        "import powerbert, powerbert.cli.app, powerbert.runner.supervisor, powerbert.runner.local, powerbert.runner.worker\n"
        "import powerbert.runner.experiments, powerbert.runner.plan, powerbert.training.loop\n",
        "m == 'ray' or m.startswith('ray.')",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def heavy_modules_loaded_by(*args: str) -> tuple[int, list[str], str]:
    """Run `powerbert ARGS` in a fresh interpreter; its exit code, the heavy libraries it had
    imported when it ended, and what it printed."""
    code = (
        "import sys\n"
        "from powerbert.cli import app\n"
        f"sys.argv = ['powerbert', *{list(args)!r}]\n"
        "try:\n"
        "    app()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code if isinstance(exc.code, int) else 0\n"
        "else:\n"
        "    code = 0\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    heavy_line = [line for line in result.stdout.splitlines() if line.startswith("HEAVY ")]
    assert heavy_line, result.stdout + result.stderr
    return result.returncode, ast.literal_eval(heavy_line[-1][len("HEAVY "):]), result.stdout + result.stderr


@pytest.fixture
def one_run_experiment(tmp_path, tiny_model_dir, toy_data_dir):
    """A one-run experiment on the tiny model whose run was stopped, so it can be resumed."""
    db = tmp_path / "runs.db"
    config = TrainConfig(tasks=("sst",), data_dir=str(toy_data_dir), model=str(tiny_model_dir), epochs=1, batch_size=8, max_length=32)
    with Store(db) as store:
        exp = experiments.create_experiment(store, config, name="light", out_root=tmp_path / "runs")
        run = store.runs(exp.id)[0]
        store.update_run(run.id, status=RunStatus.STOPPED)
    return db


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["list"], ["status"], ["status", "light"], ["stop", "light"]])
def test_reading_and_stopping_commands_import_no_heavy_library(one_run_experiment, args):
    code, heavy, output = heavy_modules_loaded_by(*args, *(["--db", str(one_run_experiment)] if "--help" not in args else []))
    assert code == 0, output
    assert heavy == [], output


def test_resume_imports_no_heavy_library(one_run_experiment):
    code, heavy, output = heavy_modules_loaded_by("resume", "light", "--db", str(one_run_experiment))
    assert code == 0, output
    assert heavy == [], output
    # The supervisor it started trains the run to the end: wait for it, so nothing outlives the test.
    deadline = time.monotonic() + 240
    with Store(one_run_experiment) as store:
        while not store.get_experiment("light").status.is_terminal:
            assert time.monotonic() < deadline, "the resumed run did not end within 240 s"
            time.sleep(0.5)
        assert store.runs(store.get_experiment("light").id)[0].status == RunStatus.FINISHED
