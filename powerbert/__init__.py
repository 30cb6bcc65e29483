"""PowerBERT: train one BERT per non-empty subset of tasks, then ensemble them.

The headless core, the `powerbert` CLI and the Python API. This package never imports textual or
the `tui` package; the dashboard reads what this package writes to runs.db.

    import powerbert
    ens = powerbert.load("runs.db")     # the newest finished experiment (or load(db, "name"))
    ens.predict("sst", ["a gorgeous, witty, seductive movie."])

`import powerbert` stays light: torch and the models load when `load` is called.
"""

from powerbert.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "load"]


def load(db="runs.db", experiment=None, *, device: str = "auto"):
    """A finished experiment of `db` as a `powerbert.inference.api.Ensemble` that predicts.

    `experiment` is a name or id; None takes the newest finished one. Errors raise UserError."""
    from powerbert.inference.api import load as load_ensemble

    return load_ensemble(db, experiment, device=device)
