"""The Ray backend: an experiment's runs as actors on the nodes of a Ray cluster.

driver.py is the supervisor's side (claims runs, places actors, polls them, writes runs.db);
actor.py trains one run on a node and buffers what it records; nodes.py connects, counts the
room and runs the preflight; node_check.py is what each node checks of itself. Only this
package imports ray (an import-linter contract in pyproject.toml), and only when an
experiment asks for `--backend ray`.
"""
