"""The `powerbert` command line: thin Typer commands that parse, call the library, and print.

app.py holds the Typer app and what commands share; each other module is one group of commands
(train.py: `train`; experiments.py: `run`, `status`, `watch`, `list`, `stop`, `resume`;
results.py: `ensemble`, `report`; predict.py: `predict`; tasks.py: `tasks`; plan.py: `plan`). Importing a group registers its commands.
Errors the user can fix print one line and exit 1; anything else is reported as an internal
error; `powerbert --debug ...` shows the traceback.
"""

# ruff: noqa: I001 - the groups register in the order `powerbert --help` lists them
from powerbert.cli.app import app
from powerbert.cli import train  # noqa: F401
from powerbert.cli import experiments  # noqa: F401
from powerbert.cli import results  # noqa: F401
from powerbert.cli import predict  # noqa: F401
from powerbert.cli import tasks  # noqa: F401
from powerbert.cli import plan  # noqa: F401


def main() -> None:
    """Entry point of the `powerbert` script."""
    app()
