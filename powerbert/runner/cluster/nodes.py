"""The Ray cluster as PowerBERT sees it: connecting, which nodes can take a run, how many runs
fit at once, and the preflight every node that could take a run passes before any starts
(`preflight_folder`: the one both front ends run before they create an experiment).

Everything here is Ray's own API (ray.init, ray.nodes, tasks pinned with a node affinity); the
only thing PowerBERT adds is what it checks on each node (node_check.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from powerbert.errors import ConfigError, ExperimentError, first_line
from powerbert.runner.cluster.node_check import TOKEN_PREFIX, check_node, versions

PREFLIGHT_TIMEOUT_S = 120.0  # a node's check runs in a fresh Ray worker: its Python start counts


@dataclass(frozen=True)
class PerRun:
    """What each run asks Ray for."""

    cpus: float = 1.0
    gpus: float = 1.0

    def describe(self) -> str:
        return f"{self.cpus:g} CPU and {self.gpus:g} GPU per run"

    def fits(self, resources: dict) -> int:
        """How many runs fit at once in a node's total `resources`."""
        counts = [math.floor(resources.get(name, 0.0) / want + 1e-9) for name, want in (("CPU", self.cpus), ("GPU", self.gpus)) if want > 0]
        return min(counts) if counts else 0


def per_run_of(launch: dict) -> PerRun:
    """What each run of an experiment with these launch settings asks Ray for."""
    return PerRun(cpus=float(launch.get("ray_cpus_per_run", 1.0)), gpus=float(launch.get("ray_gpus_per_run", 1.0)))


def default_address() -> str:
    return os.environ.get("RAY_ADDRESS") or "auto"


def connect(address: str | None):
    """Join the cluster at `address` as a driver (quietly: Ray's own messages stay out of our
    logs); the ray module. One line if Ray is missing or the cluster cannot be reached."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray on this machine: pip install 'powerbert[ray]'") from None
    address = address or default_address()
    if ray.is_initialized():
        return ray
    hint = "(start one with `ray start --head`, or give the head's host:port with --ray-address)"
    refused = _unreachable(address)
    if refused:
        raise ExperimentError(f"cannot reach the Ray cluster at {address}: {refused} {hint}")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, namespace="powerbert")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExperimentError(f"cannot reach the Ray cluster at {address}: {first_line(exc)} {hint}") from None
    return ray


def _unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing answers at a host:port address, or None (also for "auto" and ray://,
    which Ray resolves itself). Asked before ray.init: given an address where no GCS listens,
    Ray retries for minutes before it says so."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


def alive_nodes(ray) -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def describe_node(node_id: str, where: str) -> str:
    """How messages name a node: its id's first 12 hex digits and its address or host."""
    return f"{node_id[:12]} ({where})"


def node_name(node: dict) -> str:
    """describe_node for one of ray.nodes()'s records."""
    return describe_node(node["NodeID"], node.get("NodeManagerAddress") or node.get("NodeManagerHostname"))


def _room(nodes: list[dict], per_run: PerRun) -> int:
    return sum(per_run.fits(node.get("Resources", {})) for node in nodes)


def slots(ray, per_run: PerRun) -> int:
    """How many runs the cluster's live nodes take at once."""
    return _room(alive_nodes(ray), per_run)


def preflight(ray, folder: Path, per_run: PerRun) -> int:
    """Check every node that could take a run; the number of slots. Raises ExperimentError
    naming the first node at fault: a run folder it cannot see or write, or versions that are
    not the head's (this process's)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in alive_nodes(ray) if per_run.fits(node.get("Resources", {}))]
    if not nodes:
        raise ExperimentError(f"no node of the Ray cluster has room for a run ({per_run.describe()}; "
                              f"on a CPU-only cluster use --ray-gpus-per-run 0)")
    token = f"{TOKEN_PREFIX}{uuid.uuid4().hex}"
    token_path = Path(folder) / token
    try:  # the folder is there: made private by the caller (preflight_folder, create_experiment)
        token_path.write_bytes(b"")
    except OSError as exc:
        raise ExperimentError(f"{folder}: cannot write the preflight's file: {exc.strerror}") from None
    expected = versions()
    remote_check = ray.remote(num_cpus=0, max_retries=0)(check_node)
    try:
        refs = {node["NodeID"]: remote_check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(str(folder), token, expected) for node in nodes}
        for node in nodes:
            try:
                problem = ray.get(refs[node["NodeID"]], timeout=PREFLIGHT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - whatever Ray says, it names this node
                problem = f"could not run the check ({type(exc).__name__}: {first_line(exc)}; is powerbert installed there?)"
            if problem:
                raise ExperimentError(f"Ray node {node_name(node)} {problem}")
    finally:
        token_path.unlink(missing_ok=True)
    return _room(nodes, per_run)


def preflight_folder(launch: dict, out_root: Path | str) -> int:
    """Before an experiment is created (`powerbert run --backend ray`, the dashboard's form):
    join the cluster of `launch` (its ray_address, else the default) and check that every node
    that could take a run sees the runs folder `out_root` at the same path and writes there,
    with the head's versions; the number of runs that fit at once. Raises a UserError in one
    line: Ray missing, the cluster out of reach, or the node at fault."""
    from powerbert.runner.experiments import make_private_dirs

    with joined(launch.get("ray_address")) as ray:  # first: a cluster out of reach leaves no folder behind
        folder = Path(out_root).expanduser().resolve()
        make_private_dirs(folder)
        return preflight(ray, folder, per_run_of(launch))


@contextlib.contextmanager
def joined(address: str | None):
    """The cluster joined for one question (the preflight, the plan's slot count) and left
    again: a front end that stays open (the dashboard, `powerbert run` following its runs) must
    not stay a driver of the cluster, nor keep asking a cluster the user has since changed."""
    import ray

    was_joined = ray.is_initialized()
    yield connect(address)
    if not was_joined:
        ray.shutdown()
