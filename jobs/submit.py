"""Submitting a sweep to Ray from ``skillsweep run`` (the same job ``ray job submit`` runs)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from harness.libenv import RAY_JOB_ENV, apply_env_defaults
from serve.server import free_port

# ray.job_submission is imported when the job is submitted: about a second at import, which the
# local head's start and the checks before it do not need.

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = "http://127.0.0.1:8265"


def _ray_cli() -> str:
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def _reachable(address: str) -> bool:
    try:
        # 401 means a cluster is there and wants the token, which the client sends
        return httpx.get(f"{address}/api/version", timeout=3).status_code in (200, 401)
    except httpx.TransportError:
        return False


def use_token_auth() -> None:
    """Ray 2.60 clusters authenticate with a token: use one, creating ~/.ray/auth_token if absent.

    The token is a secret: it is never printed or logged (the command's output is discarded)."""
    apply_env_defaults()
    os.environ["RAY_AUTH_MODE"] = RAY_JOB_ENV["RAY_AUTH_MODE"]
    subprocess.run([_ray_cli(), "get-auth-token", "--generate"], check=True, capture_output=True, text=True)


def end_ray_start(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """End a ``ray start --block`` we started in its own session.

    SIGTERM to it alone: it drains its node through the GCS, then stops what it started.
    Signalling its whole group at once would kill the GCS first, and the drain would wait out its
    30 s for a GCS that is gone. Its group gets SIGTERM only if it has not ended in time."""
    try:
        proc.send_signal(signal.SIGTERM)  # nothing if it has ended (and been reaped) already
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def node_processes(pgids: set[int], temp_dirs: list[str], more: set[int] | None = None) -> list[int]:
    """Live (not zombie) processes of Ray nodes we started: in the ``ray start`` process groups
    ``pgids``, naming one of the nodes' ``temp_dirs``, or in ``more``; never this process."""
    found = set(more or ())
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(p.info["cmdline"] or [])
            if os.getpgid(p.pid) in pgids or any(d in cmdline for d in temp_dirs):
                found.add(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    live = []
    for pid in sorted(found - {os.getpid()}):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                live.append(pid)
        except psutil.Error:
            continue
    return live


def kill_processes(pids: list[int], timeout_s: float = 10.0) -> None:
    """SIGKILL to each of ``pids`` still there (what a node's own stop left), and wait for them."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout_s)


class LocalHead:
    """A Ray head of our own: its own temporary directory and ports, bound to 127.0.0.1, and
    stopped by the process group we started (``ray start --block``), never ``ray stop``, which
    would stop every Ray instance on the machine."""

    def __init__(self, num_cpus: int | None = None, extra: list[str] | None = None, join: str | None = None):
        """``join``: a head's GCS address: this is then a worker node of that cluster, on this machine."""
        self.num_cpus = num_cpus or len(os.sched_getaffinity(0)) or 1
        self.extra = list(extra or [])
        self.join = join
        # Short: Ray's Unix sockets live under it and socket paths are limited to 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="ssray-", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None

    def start(self, timeout_s: float = 120.0) -> LocalHead:
        """Start the node; a head is returned once its job API answers, a joining node at once."""
        use_token_auth()
        ports = {"--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                 "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
        if not self.join:
            ports["--ray-client-server-port"] = free_port()
        # Worker ports: a range of 201 that holds none of the ports chosen above (free ports
        # the kernel hands out may lie close together).
        taken = {self.gcs_port, self.dashboard_port, *ports.values()}
        low = free_port()
        while any(low <= p <= low + 200 for p in taken):
            low = free_port()
        role = [f"--address={self.join}"] if self.join else [
            "--head", "--dashboard-host=127.0.0.1", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}"]
        cmd = [_ray_cli(), "start", *role, "--block", "--node-ip-address=127.0.0.1",
               f"--temp-dir={self.temp_dir}", f"--num-cpus={self.num_cpus}", "--disable-usage-stats",
               f"--min-worker-port={low}", f"--max-worker-port={low + 200}",
               *(f"{k}={v}" for k, v in ports.items()), *self.extra]
        self._log = open(Path(self.temp_dir) / "ray-start.log", "wb")
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        self._pgid = self._proc.pid  # kept after stop(): processes() still finds the group
        deadline = time.monotonic() + timeout_s
        while not self.join and not _reachable(self.address):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"the Ray head did not start:\n{tail}")
            time.sleep(0.5)
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-2000:]

    def processes(self) -> list[int]:
        """Live processes of this head: the ``ray start`` group, and anything naming its temp dir."""
        return node_processes({self._pgid} if self._pgid else set(), [self.temp_dir])

    def stop(self, grace_s: float = 30.0) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        end_ray_start(proc, grace_s)
        kill_processes(self.processes())
        proc.poll()
        self._log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def submit_sweep(config: Path, *, run_name: str | None, resume: bool, out: Path, address: str | None,
                 echo=print) -> int:
    """Submit a sweep as a Ray job (starting a local head if none answers), follow its log; 0 when it succeeded."""
    use_token_auth()  # before Ray is imported: it reads the auth mode at import
    from ray.job_submission import JobStatus, JobSubmissionClient

    address = address or DASHBOARD
    head = None
    if not _reachable(address):
        if address != DASHBOARD:
            echo(f"no Ray cluster answers at {address}")
            return 2
        echo("starting a local Ray head on 127.0.0.1 …")
        head = LocalHead().start()
        address = head.address
    try:
        args = [sys.executable, "-m", "jobs.sweep", str(config.resolve()), "--out", str(out.resolve())]
        args += ["--run", run_name] if run_name else []
        args += ["--resume"] if resume else []
        # Local Ray shares this filesystem: run from the checkout instead of uploading it.
        entrypoint = f"cd {shlex.quote(str(REPO))} && {shlex.join(args)}"
        client = JobSubmissionClient(address)
        job = client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": dict(RAY_JOB_ENV)})
        echo(f"submitted Ray job {job} (dashboard: {address})")
        seen = 0
        while True:
            logs = client.get_job_logs(job)
            if len(logs) > seen:
                echo(logs[seen:].rstrip("\n"))
                seen = len(logs)
            status = client.get_job_status(job)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            time.sleep(2)
        logs = client.get_job_logs(job)
        if len(logs) > seen:
            echo(logs[seen:].rstrip("\n"))
        echo(f"job {job}: {status.value}")
        return 0 if status == JobStatus.SUCCEEDED else 1
    finally:
        if head is not None:
            head.stop()
