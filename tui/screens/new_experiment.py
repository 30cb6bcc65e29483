"""The new-experiment form: tasks, data, model, profile and budget; checked, then started.

Start (ctrl+s, or the button) checks the settings in a thread worker with the same
`experiments.validate` as `powerbert run` (task files present and readable, model loadable),
shows what is wrong in one line under the form, and otherwise creates the experiment and
launches its detached supervisor exactly as `powerbert run --detach` does.

Tab walks the fields in the order they are shown, starting at the first task's box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static

from powerbert.config import absolute_model, absolute_path, parse_gpus
from powerbert.errors import first_line
from powerbert.tasks import TASKS
from tui.messages import FormChecked
from tui.widgets.tick_box import TickBox

AUTO = "auto"


@dataclass
class FormValues:
    name: str | None
    profile: str
    overrides: dict
    gpus: list[int] | None
    parallel: int


def _int(text: str, what: str, minimum: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    value = int(text)
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return value


def field(label: str, widget) -> ComposeResult:
    with Horizontal(classes="field"):
        yield Label(label)
        yield widget


class NewExperimentScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__(id="new-experiment")
        self.checking = False

    def compose(self) -> ComposeResult:
        from powerbert.profiles import PROFILES  # torch: already imported by the app's warm-up

        yield Header()
        # Not focusable itself: as a tab stop of its own it took the first focus and one Tab in
        # every round, so what was typed next went nowhere. Focus moves keep it scrolled.
        with VerticalScroll(id="form", can_focus=False):
            with Horizontal(classes="field"):
                yield Label("Tasks")
                for task in TASKS.values():
                    yield TickBox(task.name, value=not task.optional, id=f"task-{task.name}")
            yield from field("Data directory", Input(compact=True, placeholder="built-in demo data", id="data-dir"))
            yield from field("Model", Input(compact=True, placeholder="offline MiniLM (or a Hugging Face id or folder)", id="model"))
            options = [("auto: demo, or best with a data directory", AUTO)] + [(p, p) for p in PROFILES]
            yield from field("Profile", Select(options, value=AUTO, allow_blank=False, compact=True, id="profile"))
            yield from field("Epochs", Input(compact=True, placeholder="the profile's", type="integer", id="epochs"))
            yield from field("Max training rows", Input(compact=True, placeholder="per task per epoch; the profile's; 0 = all", type="integer", id="max-train"))
            yield from field("GPUs", Input(compact=True, placeholder="every GPU found; or 0,1; or cpu", id="gpus"))
            yield from field("Parallel runs", Input(compact=True, value="1", type="integer", tooltip="runs at once per GPU, or on the CPU", id="parallel"))
            yield from field("Name", Input(compact=True, placeholder="tasks and time", id="name"))
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Start (ctrl+s)", variant="success", compact=True, id="start")
                yield Button("Cancel (esc)", compact=True, id="cancel")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = "new experiment"

    def _text(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value

    def values(self) -> FormValues:
        """What the form says, as run settings; ValueError names the first bad field."""
        tasks = tuple(t for t in TASKS if self.query_one(f"#task-{t}", Checkbox).value)
        if not tasks:
            raise ValueError("choose at least one task")
        from powerbert.profiles import default_profile

        data_dir = self._text("data-dir").strip()
        data_dir = absolute_path(data_dir) if data_dir else None
        profile = self.query_one("#profile", Select).value
        profile = default_profile(data_dir) if profile == AUTO else str(profile)
        overrides = {
            "tasks": tasks, "data_dir": data_dir, "model": absolute_model(self._text("model").strip() or None),
            "epochs": _int(self._text("epochs"), "epochs", 1),
            "max_train": _int(self._text("max-train"), "max training rows", 0),
        }
        parallel = _int(self._text("parallel"), "parallel runs", 1) or 1
        name = self._text("name").strip() or None
        return FormValues(name, profile, overrides, parse_gpus(self._text("gpus")), parallel)

    def say(self, text: str, error: bool = True) -> None:
        message = self.query_one("#form-error", Static)
        message.set_class(error, "error")
        message.update(text)

    def action_start(self) -> None:
        if self.checking:
            return
        try:
            values = self.values()
        except ValueError as exc:
            self.say(str(exc))
            return
        self.checking = True
        self.query_one("#start", Button).disabled = True
        self.say("checking the data and the model…", error=False)
        self._check_and_start(values)

    @work(thread=True, exclusive=True, exit_on_error=False, group="form")
    def _check_and_start(self, values: FormValues) -> None:
        from powerbert.profiles import resolve_config
        from powerbert.runner import experiments
        from powerbert.runner.checks import check_settings

        try:
            config = resolve_config(values.profile, values.overrides)
            check_settings(config, gpus=values.gpus)
            db = self.app.db
            store = db.store(create=True)
            out_root = os.environ.get("POWERBERT_OUT") or db.path.parent / "runs"
            experiment = experiments.create_experiment(
                store, config, name=values.name, profile=values.profile, out_root=out_root,
                gpus=values.gpus, runs_per_gpu=values.parallel, max_parallel=values.parallel,
            )
            experiments.launch(db.path, store, experiment)
            self.post_message(FormChecked(experiment.id))
        except Exception as exc:  # shown under the form, one line
            text = first_line(exc)
            self.post_message(FormChecked(None, text))

    def on_form_checked(self, message: FormChecked) -> None:
        self.checking = False
        self.query_one("#start", Button).disabled = False
        if message.error is not None:
            self.say(message.error)
            return
        self.app.pop_screen()
        self.app.open_experiment(message.experiment_id)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_start()

    def action_cancel(self) -> None:
        self.app.pop_screen()
