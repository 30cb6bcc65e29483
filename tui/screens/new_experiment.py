"""The new-experiment form: tasks, subsets, data, model, profile, budget and backend; estimated,
checked, then started.

The tasks are the registry's: the built-in ones and those declared in ./powerbert.toml (read by
the app at start; a form opened before that gets their boxes when it is read). Subsets take
`powerbert run --subsets`' grammar (powerbert.subsets.select_subsets): empty is the power set.

Under the form a line estimates what the settings cost, as `powerbert run` prints it before it
starts: runs, wall time, disk when done (powerbert.runner.plan.plan_experiment). It is worked
out in a thread worker a moment after the last change (typing does not start one per key),
one at a time (the first estimate for a model and device calibrates it: real training steps),
and an answer about settings changed since is dropped. What stops an estimate (bad subsets,
missing data) is that line's text. On the Ray backend there is no estimate, only the run count
(see `_estimate`).

Start (ctrl+s, or the button) checks the settings in a thread worker with the same
`check_settings` as `powerbert run` (task files present and readable, model loadable), shows
what is wrong in one line under the form, and otherwise creates the experiment with the chosen
subsets and launches its detached supervisor exactly as `powerbert run --detach` does. The
backend is local (GPUs and parallel runs on this machine) or ray (a cluster's address and what
each run asks it for; only those fields show): its settings are checked as `powerbert run`
checks them (check_launch), and for ray the worker runs the same preflight of every node of the
cluster (powerbert.runner.cluster.nodes.preflight_folder) before anything is created.

Tab walks the fields in the order they are shown, starting at the first task's box.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static
from textual.worker import get_current_worker

from powerbert.config import absolute_model, absolute_path, parse_gpus
from powerbert.errors import ConfigError, first_line
from powerbert.tasks import TASKS
from tui.messages import EstimateReady, FormChecked
from tui.widgets.tick_box import TickBox

AUTO = "auto"
SUBSETS_PLACEHOLDER = "all; or singles, pairs, full, upto:K, sst+para"
BACKENDS = [("local: worker processes on this machine", "local"), ("ray: actors on a Ray cluster's nodes", "ray")]
# check_launch names `powerbert run`'s options; the form says its own fields' names.
RAY_FIELDS = {"--ray-cpus-per-run": "CPUs per run", "--ray-gpus-per-run": "GPUs per run"}
ESTIMATE_DELAY_S = 0.4  # the estimate starts this long after the last change
ESTIMATING = "estimating…"
CALIBRATING = "estimating… (calibrating this device once)"
# One estimate computes at a time, in every form: a calibration trains, and two at once would
# measure each other. A worker that waited here for an older one skips if its form moved on.
PLAN_LOCK = threading.Lock()


@dataclass
class FormValues:
    name: str | None
    profile: str
    overrides: dict
    gpus: list[int] | None
    parallel: int
    subsets: list[tuple[str, ...]]
    ray: dict | None = None  # backend "ray" and its settings; None: the local backend

    @property
    def launch(self) -> dict:
        """The slots, as plan_experiment and the supervisor read them."""
        return {"gpus": self.gpus, "runs_per_gpu": self.parallel, "max_parallel": self.parallel, **(self.ray or {})}


def about(seconds: float) -> str:
    """A wall time as h:mm:ss (fmt_duration drops the hours under one)."""
    from powerbert.views import fmt_duration

    text = fmt_duration(seconds)
    return text if seconds >= 3600 else "0:" + text.rjust(5, "0")


def estimate_line(plan) -> str:
    """'7 runs · about 0:12:30 · 640.0 MB when done' (`plan`: a powerbert.runner.plan.Plan)."""
    from powerbert.runner.cleanup import fmt_bytes

    runs = len(plan.runs)
    return f"{runs} run{'s' if runs != 1 else ''} · about {about(plan.wall_seconds)} · {fmt_bytes(plan.disk_bytes)} when done"


def _int(text: str, what: str, minimum: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    value = int(text)
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return value


def _float(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected a number") from None


def field(label: str, widget, classes: str = "") -> ComposeResult:
    with Horizontal(classes=f"field {classes}".strip()):
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
        self.estimate_request = 0  # the form's state that the estimate line should be about
        self.estimate = None  # the plan on show (tests read it), None while there is none
        self._estimate_timer = None

    def compose(self) -> ComposeResult:
        from powerbert.profiles import PROFILES  # torch: already imported by the app's warm-up

        yield Header()
        # Not focusable itself: as a tab stop of its own it took the first focus and one Tab in
        # every round, so what was typed next went nowhere. Focus moves keep it scrolled.
        with VerticalScroll(id="form", can_focus=False):
            with Horizontal(classes="field", id="tasks"):
                yield Label("Tasks")
                for task in list(TASKS.values()):  # a copy: the app's worker may be registering
                    yield TickBox(task.name, value=not task.optional, id=f"task-{task.name}")
            yield from field("Subsets", Input(compact=True, placeholder=SUBSETS_PLACEHOLDER, id="subsets"))
            yield from field("Data directory", Input(compact=True, placeholder="built-in demo data", id="data-dir"))
            yield from field("Model", Input(compact=True, placeholder="offline MiniLM (or a Hugging Face id or folder)", id="model"))
            options = [("auto: demo, or best with a data directory", AUTO)] + [(p, p) for p in PROFILES]
            yield from field("Profile", Select(options, value=AUTO, allow_blank=False, compact=True, id="profile"))
            yield from field("Epochs", Input(compact=True, placeholder="the profile's", type="integer", id="epochs"))
            yield from field("Max training rows", Input(compact=True, placeholder="per task per epoch; the profile's; 0 = all", type="integer", id="max-train"))
            yield from field("Backend", Select(BACKENDS, value="local", allow_blank=False, compact=True, id="backend"))
            # One backend's fields show at a time (show_backend): the other's are not used.
            yield from field("GPUs", Input(compact=True, placeholder="every GPU found; or 0,1; or cpu", id="gpus"), "local-only")
            yield from field("Parallel runs", Input(compact=True, value="1", type="integer", tooltip="runs at once per GPU, or on the CPU", id="parallel"), "local-only")
            yield from field("Ray address", Input(compact=True, placeholder="host:port; default: $RAY_ADDRESS, then auto", id="ray-address"), "ray-only")
            yield from field("GPUs per run", Input(compact=True, value="1", type="number", tooltip="GPUs each run asks Ray for; 0 on a CPU-only cluster", id="ray-gpus"), "ray-only")
            yield from field("CPUs per run", Input(compact=True, value="1", type="number", tooltip="CPUs each run asks Ray for, and its torch threads", id="ray-cpus"), "ray-only")
            yield from field("Name", Input(compact=True, placeholder="tasks and time", id="name"))
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Start (ctrl+s)", variant="success", compact=True, id="start")
                yield Button("Cancel (esc)", compact=True, id="cancel")
        yield Static("", id="estimate")  # outside the scroll: in view however short the screen
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = "new experiment"
        declared = self.app.tasks_declared
        if declared is not None and declared.error is not None:
            self.say(declared.error)
        self.add_declared_tasks()
        self.show_backend()
        self.schedule_estimate()

    def backend(self) -> str:
        return str(self.query_one("#backend", Select).value)

    def show_backend(self) -> None:
        """Show (and enable) only the chosen backend's fields."""
        ray = self.backend() == "ray"
        for row in self.query(".ray-only"):
            row.display, row.disabled = ray, not ray
        for row in self.query(".local-only"):
            row.display, row.disabled = not ray, ray

    def add_declared_tasks(self) -> None:
        """A box for every task registered since the form was built (./powerbert.toml read
        after it opened), after the others."""
        boxes = list(self.query(TickBox))
        have = {box.id for box in boxes}
        new = [TickBox(t.name, value=not t.optional, id=f"task-{t.name}") for t in list(TASKS.values())
               if f"task-{t.name}" not in have]
        if new:
            self.query_one("#tasks", Horizontal).mount(*new, after=boxes[-1] if boxes else None)
            self.schedule_estimate()

    def _text(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value

    def chosen_tasks(self) -> tuple[str, ...]:
        return tuple(box.id.removeprefix("task-") for box in self.query(TickBox) if box.value)

    def values(self) -> FormValues:
        """What the form says, as run settings; ValueError names the first bad field."""
        tasks = self.chosen_tasks()
        if not tasks:
            raise ValueError("choose at least one task")
        from powerbert.profiles import default_profile
        from powerbert.subsets import select_subsets

        try:
            subsets = select_subsets(tasks, self._text("subsets").strip() or None)
        except ValueError as exc:  # ConfigError: "--subsets 'x': ...", the field here is Subsets
            raise ValueError(first_line(exc).removeprefix("--")) from None

        data_dir = self._text("data-dir").strip()
        data_dir = absolute_path(data_dir) if data_dir else None
        profile = self.query_one("#profile", Select).value
        profile = default_profile(data_dir) if profile == AUTO else str(profile)
        overrides = {
            "tasks": tasks, "data_dir": data_dir, "model": absolute_model(self._text("model").strip() or None),
            "epochs": _int(self._text("epochs"), "epochs", 1),
            "max_train": _int(self._text("max-train"), "max training rows", 0),
        }
        name = self._text("name").strip() or None
        if self.backend() == "ray":
            return FormValues(name, profile, overrides, None, 1, subsets, self.ray_settings())
        parallel = _int(self._text("parallel"), "parallel runs", 1) or 1
        return FormValues(name, profile, overrides, parse_gpus(self._text("gpus")), parallel, subsets)

    def ray_settings(self) -> dict:
        """The Ray backend's fields, checked as `powerbert run --backend ray` checks its options
        (an empty one is its default, as there)."""
        from powerbert.runner.checks import check_launch

        ray = {"backend": "ray", "ray_address": self._text("ray-address").strip() or None,
               "ray_gpus_per_run": _float(self._text("ray-gpus"), "GPUs per run"),
               "ray_cpus_per_run": _float(self._text("ray-cpus"), "CPUs per run")}
        try:
            check_launch(ray)
        except ConfigError as exc:
            text = first_line(exc)
            for option, label in RAY_FIELDS.items():
                text = text.replace(option, label)
            raise ValueError(text) from None
        for key in ("ray_gpus_per_run", "ray_cpus_per_run"):
            ray[key] = 1.0 if ray[key] is None else ray[key]
        return ray

    def say(self, text: str, error: bool = True) -> None:
        message = self.query_one("#form-error", Static)
        message.set_class(error, "error")
        message.update(text)

    # -- the estimate ----------------------------------------------------------------------------

    def schedule_estimate(self) -> None:
        """Estimate again a moment after the last change."""
        if self._estimate_timer is not None:
            self._estimate_timer.stop()
        self._estimate_timer = self.set_timer(ESTIMATE_DELAY_S, self._estimate)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "name":
            self.schedule_estimate()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.schedule_estimate()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "backend":
            self.show_backend()
        self.schedule_estimate()

    def show_estimate(self, text: str, error: bool = False, busy: bool = False) -> None:
        line = self.query_one("#estimate", Static)
        line.set_class(error, "error")
        line.set_class(busy, "busy")
        line.update(text)

    def _estimate(self) -> None:
        self._estimate_timer = None
        self.estimate_request += 1
        self.estimate = None
        try:
            values = self.values()
        except ValueError as exc:
            self.show_estimate(str(exc), error=True)
            return
        if values.ray:
            # The estimate would join the cluster to count its room (plan_experiment) and time
            # steps here for nodes that may differ: too slow and too unsure to redo a moment
            # after each change. The run count is sure; `powerbert plan` does the rest.
            runs = len(values.subsets)
            self.show_estimate(f"{runs} run{'s' if runs != 1 else ''} on the Ray cluster · time and disk: powerbert plan --backend ray")
            return
        self.show_estimate(ESTIMATING, busy=True)
        self._estimate_worker(self.estimate_request, values)

    @work(thread=True, exclusive=True, exit_on_error=False, group="estimate")
    def _estimate_worker(self, request: int, values: FormValues) -> None:
        from powerbert.profiles import resolve_config

        planner = self.app.planner
        if planner is None:
            from powerbert.runner.plan import plan_experiment as planner

        def said(text: str) -> None:  # plan_experiment's on_message: only a calibration speaks
            if text.startswith("calibrating"):
                self.post_message(EstimateReady(request, CALIBRATING))

        with PLAN_LOCK:
            if request != self.estimate_request:
                return  # the form changed while an older estimate ran: a newer one is on its way
            try:
                config = resolve_config(values.profile, values.overrides)
                plan = planner(config, values.subsets, values.launch, on_message=said)
                message = EstimateReady(request, estimate_line(plan), plan)
            except Exception as exc:  # bad settings or missing data: the line says it
                message = EstimateReady(request, first_line(exc), error=True)
        self.post_message(message)

    def on_estimate_ready(self, message: EstimateReady) -> None:
        if message.request != self.estimate_request:
            return  # about settings changed since
        busy = message.plan is None and not message.error
        self.estimate = message.plan
        self.show_estimate(message.text, error=message.error, busy=busy)

    # -- starting ------------------------------------------------------------------------------

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
            out_root = os.environ.get("POWERBERT_OUT") or db.path.parent / "runs"
            if values.ray:
                from powerbert.runner.cluster.nodes import preflight_folder

                self.app.call_from_thread(self.say, "joining the Ray cluster and checking its nodes…", error=False)
                preflight_folder(values.launch, out_root)
                if get_current_worker().is_cancelled:
                    return  # the form was closed while the cluster answered: start nothing
            store = db.store(create=True)
            experiment = experiments.create_experiment(
                store, config, name=values.name, profile=values.profile, out_root=out_root,
                gpus=values.gpus, runs_per_gpu=values.parallel, max_parallel=values.parallel,
                subsets=values.subsets, **(values.ray or {}),
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
