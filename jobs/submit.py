"""Submitting a sweep to Ray from ``skillsweep run`` (the same job ``ray job submit`` runs)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = "http://127.0.0.1:8265"


def _ray_cli() -> str:
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def _reachable(address: str) -> bool:
    import httpx

    try:
        # 401 means a cluster is there and wants the token, which the client sends
        return httpx.get(f"{address}/api/version", timeout=3).status_code in (200, 401)
    except httpx.TransportError:
        return False


def use_token_auth() -> None:
    """Ray 2.60 clusters authenticate with a token: use one, creating ~/.ray/auth_token if absent.

    The token is a secret: it is never printed or logged (the command's output is discarded)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    subprocess.run([_ray_cli(), "get-auth-token", "--generate"], check=True, capture_output=True, text=True)


def start_local_head(num_cpus: int | None = None, extra: list[str] | None = None) -> None:
    """A Ray head bound to 127.0.0.1, dashboard included (the job API lives there)."""
    use_token_auth()
    subprocess.run([_ray_cli(), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                    f"--num-cpus={num_cpus or os.cpu_count() or 1}", "--disable-usage-stats", *(extra or [])],
                   check=True, capture_output=True, text=True)


def stop_local_head() -> None:
    subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, text=True)


def submit_sweep(config: Path, *, run_name: str | None, resume: bool, out: Path, address: str | None,
                 echo=print) -> int:
    use_token_auth()  # before Ray is imported: it reads the auth mode at import
    from ray.job_submission import JobStatus, JobSubmissionClient

    address = address or DASHBOARD
    started_here = False
    if not _reachable(address):
        if address != DASHBOARD:
            echo(f"no Ray cluster answers at {address}")
            return 2
        echo("starting a local Ray head on 127.0.0.1 …")
        start_local_head()
        started_here = True
    try:
        args = [sys.executable, "-m", "jobs.sweep", str(config.resolve()), "--out", str(out.resolve())]
        args += ["--run", run_name] if run_name else []
        args += ["--resume"] if resume else []
        # Local Ray shares this filesystem: run from the checkout instead of uploading it.
        entrypoint = f"cd {shlex.quote(str(REPO))} && {shlex.join(args)}"
        client = JobSubmissionClient(address)
        job = client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": {
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}})
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
        if started_here:
            stop_local_head()
