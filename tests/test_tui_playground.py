"""The dashboard's playground, with a tiny finished experiment trained for real (once per module).

Run: python -m pytest tests/test_tui_playground.py -q
"""

from __future__ import annotations

import pytest

from powerbert.store import Store
from tests.fixtures import run_worker_here
from tests.tui_harness import TASKS3, make_app, plain, run_async, wait_for

pytestmark = pytest.mark.timeout(240)


# ---- the playground -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory, tiny_model_dir, toy_data_dir):
    """A tiny finished three-task experiment, trained in this process (7 tiny runs)."""
    from powerbert.config import TrainConfig
    from powerbert.results.evaluate import ensemble_experiment
    from powerbert.runner import experiments
    root = tmp_path_factory.mktemp("tiny-exp")
    path = root / "runs.db"
    config = TrainConfig(tasks=TASKS3, data_dir=str(toy_data_dir), model=str(tiny_model_dir), epochs=1, max_train=32,
                         batch_size=16, lr=1e-3, precision="fp32", checkpoint_every_s=1e9)
    with Store(path) as store:
        exp = experiments.create_experiment(store, config, name="tiny", out_root=root / "runs")
        for run in store.runs(exp.id):
            assert run_worker_here(path, run.id) == 0
        ensemble_experiment(store, exp.id)
    return path


async def _predict(pilot, screen, first: str, second: str = "") -> None:
    answered = screen.answered
    screen.query_one("#first").value = first
    screen.query_one("#second").value = second
    screen.query_one("#first").focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.answered > answered, timeout=60, what="the prediction")


@run_async
async def test_playground_shows_every_model_and_ensemble(tiny_experiment):
    from tui.screens.playground import PlaygroundScreen

    app = make_app(tiny_experiment)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#experiments-table").row_count == 1)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PlaygroundScreen))
        screen = app.screen
        await pilot.press("enter")  # empty: a message, not a crash
        assert "type a sentence first" in plain(screen.query_one("#play-status"))
        await wait_for(pilot, lambda: screen.loaded is not None, timeout=120, what="the models to load")
        assert not screen.query_one("#play-loading").display
        output = screen.query_one("#play-output")

        await _predict(pilot, screen, "a great movie .")
        text = plain(output)
        for model in ("sst", "sst+para", "sst+sts", "sst+para+sts"):
            assert model in text
        for scheme in ("voting", "weighted", "single", "learned"):
            assert scheme in text
        assert "para" not in text.split("sst ·", 1)[0]

        await _predict(pilot, screen, "what about cats ?", "why do i like cats ?")
        text = plain(output)
        assert "para · Quora paraphrase" in text and "sts · STS similarity" in text
        assert "/ 5" in text and "p(para)" in text

        await _predict(pilot, screen, "😀🎬 très bien — ok? \u202e\u200d")
        assert "sst ·" in plain(output)
        await _predict(pilot, screen, "great " * 2000)
        assert "truncated" in plain(output)
        await _predict(pilot, screen, "\x00\x01\x02")
        assert "control characters" in plain(output) or "nothing the tokenizer" in plain(output)
        assert screen.is_attached
