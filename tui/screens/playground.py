"""The playground: type a sentence (or two) and see what every model and every ensemble says.

One sentence goes to the single-sentence tasks (sst, cfimdb), two to the pair tasks (para,
sts). The experiment's models are loaded once, in a thread worker, while a loading indicator
shows; predictions run in a thread worker too, so typing never waits for torch. Empty input,
a missing second sentence, very long text (truncated, and said so), emoji and unusual text
get an answer in words, never a crash.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, LoadingIndicator, Static

from powerbert.errors import first_line
from powerbert.tasks import tasks_for_input
from tui.messages import ModelsLoaded, PredictionReady


class PlaygroundScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+r", "predict", "Predict"),
        Binding("ctrl+l", "clear", "Clear"),
    ]

    def __init__(self, experiment_id: int) -> None:
        super().__init__(id="playground")
        self.experiment_id = experiment_id
        self.loaded = None  # powerbert.inference.predict.LoadedExperiment once loaded
        self.request = 0  # submissions so far; an answer for an older one is dropped
        self.pending: tuple[str, str] | None = None  # submitted while the models load
        self.answered = 0  # submissions answered (tests wait on this)
        self.load_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="a sentence (sst) — or the first of a pair", compact=True, id="first")
        yield Input(placeholder="second sentence, for para and sts (optional)", compact=True, id="second")
        yield Static("", id="play-status")
        yield LoadingIndicator(id="play-loading")
        with VerticalScroll(id="play-results"):
            yield Static("", id="play-output")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = "playground"
        self.say("loading the experiment's models…")
        self._load()

    def say(self, text: str | Text, error: bool = False) -> None:
        status = self.query_one("#play-status", Static)
        status.set_class(error, "error")
        status.update(text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="models")
    def _load(self) -> None:
        try:
            from powerbert.inference.loading import load_experiment_models

            store = self.app.db.store()
            loaded = load_experiment_models(store, store.get_experiment(self.experiment_id), device="cpu")
            self.post_message(ModelsLoaded(loaded))
        except Exception as exc:  # an experiment with no finished run, a corrupt checkpoint...
            self.post_message(ModelsLoaded(None, first_line(exc)))

    def on_models_loaded(self, message: ModelsLoaded) -> None:
        self.query_one("#play-loading").display = False
        if message.error is not None:
            self.load_error = f"cannot load the models: {message.error}"
            self.say(self.load_error, error=True)
            return
        self.loaded = loaded = message.loaded
        self.sub_title = f"{loaded.experiment.name} · playground"
        text = Text(f"{_count(len(loaded.models), 'model')} of {loaded.experiment.name} ready on {loaded.device}")
        if loaded.missing:
            text.append(f" — not loaded: {', '.join(f'{s} ({why})' for s, why in loaded.missing.items())}", style="dim")
        text.append("\ntype a sentence and press enter; add a second sentence for the pair tasks", style="dim")
        self.say(text)
        if self.pending is not None:
            self.submit(*self.pending)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_predict()

    def action_predict(self) -> None:
        self.submit(self.query_one("#first", Input).value, self.query_one("#second", Input).value)

    def action_clear(self) -> None:
        for widget_id in ("#first", "#second"):
            self.query_one(widget_id, Input).value = ""
        self.query_one("#play-output", Static).update("")
        self.query_one("#first", Input).focus()

    def submit(self, first: str, second: str) -> None:
        if not first.strip() and not second.strip():
            self.say("type a sentence first (and a second one for para and sts)", error=True)
            return
        if not first.strip():
            self.say("the first sentence is empty: type it above the second one", error=True)
            return
        if self.load_error is not None:
            self.say(self.load_error, error=True)
            return
        if self.loaded is None:
            self.pending = (first, second)
            self.say("the models are still loading; your text is predicted as soon as they are ready")
            return
        self.pending = None
        pair = bool(second.strip())
        if not tasks_for_input(self.loaded.tasks, pair):
            kind = "sentence pairs (para, sts)" if pair else "single sentences (sst, cfimdb)"
            hint = "clear the second box" if pair else "add a second sentence"
            self.say(f"this experiment has no task for {kind}: {hint}", error=True)
            return
        self.request += 1
        self.say("predicting…")
        self._predict(self.request, first, second if pair else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="predict")
    def _predict(self, request: int, first: str, second: str | None) -> None:
        from powerbert.inference.encoding import PredictionCache
        from powerbert.inference.predict import predict_texts

        loaded = self.loaded
        texts = [(first, second)] if second is not None else [first]
        cache = PredictionCache()  # para and sts share the pair's embeddings
        results, notes = [], []
        for task in tasks_for_input(loaded.tasks, second is not None):
            if not loaded.members(task):
                notes.append(f"{task}: no model trained on it could be loaded")
                continue
            try:
                results.append(predict_texts(loaded, task, texts, None, cache=cache))
            except ValueError as exc:  # empty after cleaning, nothing the tokenizer can read...
                notes.append(first_line(exc))
            except Exception as exc:  # never take the dashboard down over one input
                notes.append(f"{task}: {type(exc).__name__}: {first_line(exc)}")
        self.post_message(PredictionReady(request, results, notes))

    def on_prediction_ready(self, message: PredictionReady) -> None:
        if message.request != self.request:
            return
        from tui.widgets.predictions import prediction_view

        self.answered += 1
        parts = [prediction_view(p) for p in message.results]
        parts += [Text(note, style="yellow") for note in message.notes]
        self.query_one("#play-output", Static).update(Group(*parts))
        if message.results:
            first = message.results[0]
            each = " each" if len(message.results) > 1 else ""
            self.say(f"{', '.join(p.task for p in message.results)}: {_count(len(first.members), 'model')} and "
                     f"{_count(len(first.ensembles), 'ensemble')}{each}")
        else:
            self.say("no prediction: see below", error=True)

    def action_back(self) -> None:
        self.app.pop_screen()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
