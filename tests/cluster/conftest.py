"""A real two-node Ray cluster on this machine, for the Ray backend's tests.

The cluster lives in a network namespace of its own with only loopback in it: started
anywhere else, Ray binds to the machine's address and tries to reach a public DNS server to
find it. This process's main thread enters the namespace (unshare), so the `ray start`s and
every `powerbert` command the tests run are in it too, and leaves it at the end. Every process
of the namespace (raylets, the GCS, Ray's workers, supervisors) is killed at the end, and the
tests check that none is left.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.faults.helpers import ROOT, wait_until

pytest.importorskip("ray", reason="the Ray backend's tests need ray (the dev extra installs it)")

CLONE_NEWNET = 0x40000000
PORT = 6379  # free: the namespace is new


def _net_namespace(pid: int | str = "thread-self") -> int | None:
    path = f"/proc/{pid}/ns/net"
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    tmp: Path
    namespace: int
    nodes: dict[str, int] = field(default_factory=dict)  # name -> raylet pid

    def processes(self) -> list[psutil.Process]:
        """Every process in the cluster's network namespace but this one."""
        found = []
        for proc in psutil.process_iter():
            if proc.pid != os.getpid() and _net_namespace(proc.pid) == self.namespace:
                found.append(proc)
        return found

    def start_node(self, name: str, *args: str, prefix: tuple[str, ...] = ()) -> int:
        """`ray start --address` for one more node; its raylet's pid."""
        before = {p.pid for p in self.raylets()}
        command = [*prefix, ray_executable(), "start", "--address", self.address, "--num-cpus", "1", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"ray start for node {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        new = wait_until(lambda: [p.pid for p in self.raylets() if p.pid not in before], 30, f"the raylet of node {name}")
        self.nodes[name] = new[0]
        return new[0]

    @property
    def node_ids(self) -> dict[str, str]:
        """name -> Ray node id, read from each raylet's command line (--node_id=...)."""
        ids = {}
        for name, pid in self.nodes.items():
            for arg in _cmdline(psutil.Process(pid)):
                if arg.startswith("--node_id="):
                    ids[name] = arg.partition("=")[2]
        return ids

    def raylets(self) -> list[psutil.Process]:
        return [p for p in self.processes() if _name(p) == "raylet"]

    def kill_node(self, name: str) -> None:
        """What a machine dying does to its node: its raylet and every process under it, SIGKILL."""
        raylet = psutil.Process(self.nodes.pop(name))
        for proc in [*raylet.children(recursive=True), raylet]:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass

    def alive_nodes(self) -> int:
        """How many nodes the cluster's GCS counts alive (asked from a fresh driver)."""
        code = f"import ray; ray.init(address={self.address!r}, logging_level='error'); print(sum(n['Alive'] for n in ray.nodes()))"
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1])

    def actor_processes(self) -> list[psutil.Process]:
        """Ray's processes that hold (or held) a run: named after the actor class."""
        return [p for p in self.processes() if "RemoteRun" in _name(p) + " ".join(_cmdline(p))]


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def ray_executable() -> str:
    return shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "ray"


@pytest.fixture(scope="package")
def ray_cluster():
    """A head and a second node (one CPU each) in a loopback-only network namespace."""
    if shutil.which("ip") is None:
        pytest.skip("the Ray tests need the `ip` command to bring up loopback in their network namespace")
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    if libc.unshare(CLONE_NEWNET) != 0:
        os.close(original)
        pytest.skip(f"the Ray tests need a network namespace of their own (unshare: {os.strerror(ctypes.get_errno())}; run as root)")
    tmp = Path(tempfile.mkdtemp(prefix="pbray-", dir="/tmp"))  # short: Ray's socket paths live under it
    # HOME too: Ray reads ~/.ray (an auth token left there by some other cluster makes this
    # one's GCS refuse its own nodes), and the tests' calibration cache is theirs alone.
    (tmp / "home").mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp), "RAY_ADDRESS": f"127.0.0.1:{PORT}",
           "PYTHONPATH": str(ROOT), "POWERBERT_THREADS": "1", "HOME": str(tmp / "home")}
    cluster = Cluster(f"127.0.0.1:{PORT}", env, tmp, _net_namespace())
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
        subprocess.run([ray_executable(), "start", "--head", "--port", str(PORT), "--num-cpus", "1", "--include-dashboard=false",
                        "--disable-usage-stats", "--temp-dir", str(tmp),
                        # The GCS declares a dead node dead within a few seconds (its default is ~30 s):
                        # resume must not be offered a node that no longer exists.
                        "--system-config", json.dumps({"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                                                       "health_check_initial_delay_ms": 1000})],
                       env=env, check=True, capture_output=True, timeout=180)
        cluster.nodes["head"] = cluster.raylets()[0].pid
        cluster.start_node("second")
        yield cluster
    finally:
        left = stop_everything(cluster)
        libc.setns(original, CLONE_NEWNET)
        os.close(original)
        shutil.rmtree(tmp, ignore_errors=True)
    assert not left, f"processes of the cluster outlived it: {left}"


def stop_everything(cluster: Cluster) -> list[str]:
    """`ray stop` would stop every Ray on the machine; this stops exactly the namespace's
    (raylets, the GCS, Ray's workers, supervisors). What is still there after: 'pid name'."""
    for _ in range(3):
        procs = _running(cluster.processes())
        if not procs:
            return []
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        time.sleep(0.2)
    return [f"{p.pid} {_name(p)}" for p in _running(cluster.processes())]


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those not gone and not zombies (a zombie is dead already: its parent has not reaped it)."""
    alive = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive
