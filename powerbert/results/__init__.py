"""An experiment's results, from the dev outputs its runs stored: the ensemble schemes
(ensemble.py), evaluating them for an experiment (evaluate.py), the error analysis
(analysis.py) and the report's table and charts (report.py). No model runs here.

DEFAULT_SCHEME is the ensemble that `predict`, the Python API, the report's error analysis and the
dashboard use unless told otherwise. It lives here, not in ensemble.py, so that the commands that
only name it do not import scipy. `learned` (simplex weights fit on dev, scored by 5-fold
cross-validation) scored at or above `weighted` (the paper's dev-score weights, in-sample) in 9
of the 11 seven-run experiments of bench/RESULTS.md, 0.3 points overall better on average.
"""

DEFAULT_SCHEME = "learned"
