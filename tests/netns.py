"""A real two-node Ray cluster for tests: a head and a worker node in two network namespaces.

Two namespaces of the cluster's own (``ss-<hex>-a`` and ``ss-<hex>-b``) joined by a veth pair,
with addresses from a /30 in 10.0.0.0/8 chosen at random; the head runs in namespace A, the
worker node in namespace B, so the nodes have addresses of their own and every byte between
them crosses the veth. Neither namespace has a route anywhere else: nothing the cluster does
can reach the host's network, nor anyone else's Ray.

The Ray processes are started like ``jobs.submit.LocalHead`` starts its head: ``ray start
--block`` in a new session, a temporary directory of each node's own, explicit ports (the
same numbers on both nodes: each namespace has its own ports), token authentication, no usage
statistics; they are stopped by signals to the processes we started and to their process
groups, never ``ray stop``.

The dashboard listens on the head's namespace address (``dashboard_address``), reachable from
both namespaces but not from the host's: talk to the cluster from inside a namespace with
``exec``. Needs root and iproute2's ``ip``; ``TwoNodeCluster.skip_reason()`` says why not.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from harness.libenv import RAY_JOB_ENV
from jobs.submit import _ray_cli, end_ray_start, kill_processes, node_processes, use_token_auth

# Ports inside each namespace: a fresh namespace has every port free, so fixed numbers do.
HEAD_PORTS = {"--port": 6379, "--dashboard-port": 8265, "--ray-client-server-port": 10001}
NODE_PORTS = {"--node-manager-port": 6380, "--object-manager-port": 6381, "--dashboard-agent-listen-port": 52365,
              "--dashboard-agent-grpc-port": 52366, "--metrics-export-port": 52367,
              "--runtime-env-agent-port": 52368, "--min-worker-port": 20000, "--max-worker-port": 20200}
PREFIX = "ss-"
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

# Run inside namespace A: wait until the dashboard answers, then (with nodes given) until that
# many nodes are alive; prints the alive nodes' addresses as JSON.
_WAIT = r"""
import json, sys, time, urllib.error, urllib.request
dashboard, nodes, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        urllib.request.urlopen(dashboard + "/api/version", timeout=3)
        break
    except urllib.error.HTTPError as e:
        if e.code == 401:  # a cluster is there and wants the token
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the dashboard did not answer")
    time.sleep(0.3)
alive = []
if nodes:
    from ray.util.state import list_nodes
    while True:
        try:
            alive = sorted(n.node_ip for n in list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")]))
        except Exception:
            alive = []
        if len(alive) >= nodes or time.monotonic() > deadline:
            break
        time.sleep(0.5)
print(json.dumps(alive))
"""


def _ip_cli() -> str | None:
    return shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.path.exists(p)),
                                      None)


def listed_namespaces() -> set[str]:
    """The names ``ip netns list`` shows now."""
    out = subprocess.run([_ip_cli() or "ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:160]
    except psutil.Error:
        return "(gone)"


class TwoNodeCluster:
    """A Ray head in network namespace A and a worker node in namespace B, joined by a veth pair.

    ``with TwoNodeCluster(...) as cluster:`` starts it (and on any failure cleans up before
    raising); ``stop()`` returns what could not be cleaned up, ``[]`` when nothing is left."""

    def __init__(self, head_cpus: int = 1, head_gpus: int = 0, worker_cpus: int = 1, worker_gpus: int = 0,
                 head_resources: dict[str, float] | None = None, worker_resources: dict[str, float] | None = None,
                 object_store_memory: int = 128 * 1024**2):
        self.head_cpus, self.head_gpus, self.worker_cpus, self.worker_gpus = head_cpus, head_gpus, worker_cpus, worker_gpus
        self.head_resources, self.worker_resources = dict(head_resources or {}), dict(worker_resources or {})
        self.object_store_memory = object_store_memory
        tag = uuid.uuid4().hex[:8]
        self.ns = {"a": f"{PREFIX}{tag}-a", "b": f"{PREFIX}{tag}-b"}
        # A /30 in 10.0.0.0/8: .1 for A, .2 for B (namespaces see only their own routes, so a
        # clash with the host's addresses would not matter; random keeps two clusters apart)
        net = ipaddress.ip_network(f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(64) * 4}/30")
        self.network = net
        self.addresses = {"a": str(net.network_address + 1), "b": str(net.network_address + 2)}
        self.head_ip, self.worker_ip = self.addresses["a"], self.addresses["b"]
        self.head_address = f"{self.head_ip}:{HEAD_PORTS['--port']}"  # the GCS
        self.dashboard_address = f"http://{self.head_ip}:{HEAD_PORTS['--dashboard-port']}"
        self.temp_dirs: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._pgids: set[int] = set()  # the `ray start` process groups, kept after stop() for processes()
        self._logs: dict[str, object] = {}
        self._created: list[str] = []  # namespaces made so far, for cleanup
        self._ip = _ip_cli() or "ip"

    # -- availability ---------------------------------------------------------------------

    @staticmethod
    def skip_reason() -> str | None:
        """Why namespaces cannot be made here (not root, no ``ip``, ``ip netns add`` refused), or None."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        ip = _ip_cli()
        if ip is None:
            return "iproute2's `ip` is not installed"
        probe = f"{PREFIX}probe-{uuid.uuid4().hex[:8]}"
        made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True)
        subprocess.run([ip, "netns", "delete", probe], capture_output=True)  # also whatever a failed add left
        if made.returncode != 0:
            return f"`ip netns add` failed: {(made.stderr or made.stdout).strip()}"
        return None

    @staticmethod
    def available() -> bool:
        """Whether namespaces can be made here (see ``skip_reason``)."""
        return TwoNodeCluster.skip_reason() is None

    # -- running things in the namespaces ---------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of every process started in the namespaces: token auth, no usage stats,
        and no HTTP proxy (none is reachable from the namespaces: requests go direct)."""
        base = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
        return {**base, **RAY_JOB_ENV, **(extra or {})}

    def _wrap(self, cmd, ns: str) -> list[str]:
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        return [self._ip, "netns", "exec", self.ns[ns], *map(str, cmd)]

    def exec(self, cmd, ns: str = "a", **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run(cmd)`` inside namespace ``ns`` ("a": the head's, "b": the worker's),
        with the Ray environment (``env=`` adds to it); a string runs with ``/bin/sh -c``."""
        kwargs["env"] = self.env(kwargs.get("env"))
        return subprocess.run(self._wrap(cmd, ns), **kwargs)

    def popen(self, cmd, ns: str = "a", **kwargs) -> subprocess.Popen:
        """``subprocess.Popen(cmd)`` inside namespace ``ns``, like ``exec``; the caller waits for it."""
        kwargs["env"] = self.env(kwargs.get("env"))
        return subprocess.Popen(self._wrap(cmd, ns), **kwargs)

    # -- start ------------------------------------------------------------------------------

    def _ipc(self, *args: str) -> None:
        result = subprocess.run([self._ip, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()}")

    def _make_network(self) -> None:
        for side in ("a", "b"):
            self._ipc("netns", "add", self.ns[side])
            self._created.append(self.ns[side])
        # Made inside A with its peer put straight into B: the pair never exists in the host's namespace.
        self._ipc("-n", self.ns["a"], "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
                  "netns", self.ns["b"])
        for side in ("a", "b"):
            self._ipc("-n", self.ns[side], "addr", "add", f"{self.addresses[side]}/{self.network.prefixlen}",
                      "dev", f"veth-{side}")
            self._ipc("-n", self.ns[side], "link", "set", "lo", "up")
            self._ipc("-n", self.ns[side], "link", "set", f"veth-{side}", "up")

    def _start_node(self, side: str, cmd: list[str]) -> None:
        # Short: Ray's Unix sockets live under it and socket paths are limited to 107 bytes.
        temp_dir = self.temp_dirs[side] = tempfile.mkdtemp(prefix=f"ssray{side}-", dir="/tmp")
        cmd = [*cmd, f"--temp-dir={temp_dir}", "--disable-usage-stats",
               f"--object-store-memory={self.object_store_memory}", *(f"{k}={v}" for k, v in NODE_PORTS.items())]
        log = self._logs[side] = open(Path(temp_dir) / "ray-start.log", "wb")
        self._procs[side] = self.popen(cmd, side, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self._pgids.add(self._procs[side].pid)

    def _wait(self, nodes: int, timeout_s: float) -> list[str]:
        """Wait (from inside namespace A) for the dashboard, then for ``nodes`` alive nodes; give up
        as soon as a node's ``ray start`` exits."""
        waiter = self.popen([sys.executable, "-c", _WAIT, self.dashboard_address, str(nodes), str(timeout_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + timeout_s + 30
            while waiter.poll() is None and time.monotonic() < deadline:
                if any(proc.poll() is not None for proc in self._procs.values()):
                    break
                time.sleep(0.2)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            out, err = waiter.communicate()
        dead = [side for side, proc in self._procs.items() if proc.poll() is not None]
        if waiter.returncode != 0 or dead:
            why = f"`ray start` exited on node {', '.join(dead)}" if dead else \
                f"waiting from namespace A: {err.strip()[-500:] or f'exit status {waiter.returncode}'}"
            raise RuntimeError(f"the Ray cluster did not start ({why})\n" + self.logs())
        return json.loads(out.strip().splitlines()[-1])

    def start(self, timeout_s: float = 120.0) -> TwoNodeCluster:
        """Make the namespaces, start the head in A, then the worker node in B; wait for both alive."""
        if reason := self.skip_reason():
            raise RuntimeError(f"cannot make network namespaces: {reason}")
        use_token_auth()  # ~/.ray/auth_token, which every node and client reads
        try:
            self._make_network()
            head = [_ray_cli(), "start", "--head", "--block", f"--node-ip-address={self.head_ip}",
                    f"--dashboard-host={self.head_ip}", f"--num-cpus={self.head_cpus}", f"--num-gpus={self.head_gpus}",
                    *(f"{k}={v}" for k, v in HEAD_PORTS.items())]
            head += [f"--resources={json.dumps(self.head_resources)}"] if self.head_resources else []
            self._start_node("a", head)
            self._wait(0, timeout_s)
            worker = [_ray_cli(), "start", "--block", f"--address={self.head_address}",
                      f"--node-ip-address={self.worker_ip}", f"--num-cpus={self.worker_cpus}",
                      f"--num-gpus={self.worker_gpus}"]
            worker += [f"--resources={json.dumps(self.worker_resources)}"] if self.worker_resources else []
            self._start_node("b", worker)
            alive = self._wait(2, timeout_s)
            if alive != sorted([self.head_ip, self.worker_ip]):
                raise RuntimeError(f"alive nodes {alive}, expected {self.head_ip} and {self.worker_ip}\n" + self.logs())
        except BaseException:
            self.stop()
            raise
        return self

    def logs(self, tail: int = 2000) -> str:
        """The tail of each node's ``ray start`` output."""
        parts = []
        for side, temp_dir in self.temp_dirs.items():
            path = Path(temp_dir) / "ray-start.log"
            if path.exists():
                parts.append(f"--- node {side} ({self.ns[side]}) ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # -- stop -------------------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Live processes of this cluster: the two ``ray start`` groups, anything naming a node's
        temp dir, and anything inside the two namespaces (all started by this cluster)."""
        inside = set()
        for name in self._created:
            out = subprocess.run([self._ip, "netns", "pids", name], capture_output=True, text=True).stdout
            inside.update(int(pid) for pid in out.split() if pid.isdigit())
        return node_processes(self._pgids, list(self.temp_dirs.values()), inside)

    def stop(self, grace_s: float = 30.0) -> list[str]:
        """Stop both nodes (SIGTERM to each ``ray start``, then SIGKILL to whatever of the cluster is
        still alive: in their process groups, naming their temp dirs, inside the namespaces), delete
        the namespaces (and so the veth pair) and the temp dirs. Returns what is left, ``[]`` when
        nothing is; the namespaces and temp dirs go even when processes are left."""
        for side in ("b", "a"):  # the worker node first: its drain needs the head's GCS
            if side in self._procs:
                end_ray_start(self._procs[side], grace_s)
        kill_processes(self.processes())
        for proc in self._procs.values():
            proc.poll()
        remaining = [f"process {pid}: {_cmdline(pid)}" for pid in self.processes()]
        for name in self._created:
            subprocess.run([self._ip, "netns", "delete", name], capture_output=True)
        still = listed_namespaces() & set(self._created)
        remaining += [f"namespace {name}" for name in sorted(still)]
        for log in self._logs.values():
            log.close()
        for temp_dir in self.temp_dirs.values():
            shutil.rmtree(temp_dir, ignore_errors=True)
            if os.path.exists(temp_dir):
                remaining.append(f"temp dir {temp_dir}")
        self._procs, self._logs = {}, {}
        self._created = sorted(still)
        return remaining

    def __enter__(self) -> TwoNodeCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
