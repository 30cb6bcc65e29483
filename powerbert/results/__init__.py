"""An experiment's results, from the dev outputs its runs stored: the ensemble schemes
(ensemble.py), evaluating them for an experiment (evaluate.py), the error analysis
(analysis.py) and the report's table and charts (report.py). No model runs here.

DEFAULT_SCHEME is the ensemble that `predict`, the Python API, the report's error analysis and the
dashboard use unless told otherwise. It lives here, not in ensemble.py, so that the commands that
only name it do not import scipy. It is `voting` (the equal mean of the members' logits or
scores): in all five seven-run experiments of `best`'s recipe (one optimizer step per task's
batch) it scored above `learned` (simplex weights fit on dev, 5-fold CV), by 0.16-0.55 points
overall, and it fits nothing on dev, so its dev score is not optimistic (bench/RESULTS.md,
"The default scheme").
"""

DEFAULT_SCHEME = "voting"
