"""PowerBERT: train one BERT per non-empty subset of tasks, then ensemble them.

The headless core and the `powerbert` CLI. This package never imports textual or the `tui`
package; the dashboard reads what this package writes to runs.db.
"""

__version__ = "0.1.0"
