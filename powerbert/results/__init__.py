"""An experiment's results, from the dev outputs its runs stored: the ensemble schemes
(ensemble.py), evaluating them for an experiment (evaluate.py), the error analysis
(analysis.py) and the report's table and charts (report.py). No model runs here.
"""
