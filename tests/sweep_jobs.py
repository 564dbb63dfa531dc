"""The sweep as the tests run it: a Ray job submitted to a test's own head, its journals
watched, one of its server actors killed mid-run, its end awaited."""

import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.submit import LocalHead, _ray_cli

ROOT = Path(__file__).resolve().parents[1]


def _submit_cmd(head: LocalHead, args: tuple[str, ...]) -> list[str]:
    return [_ray_cli(), "job", "submit", "--address", head.address, "--working-dir", str(ROOT), "--",
            sys.executable, "-m", "jobs.sweep", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def start_sweep(head: LocalHead, *args: str) -> subprocess.Popen:
    """``ray job submit … -- python -m jobs.sweep ARGS`` in the background (output on its stdout)."""
    return subprocess.Popen(_submit_cmd(head, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), cwd=ROOT)


def run_sweep(head: LocalHead, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """The same, to its end; with ``check`` the job must have succeeded."""
    result = subprocess.run(_submit_cmd(head, args), capture_output=True, text=True, env=_env(), timeout=timeout,
                            cwd=ROOT)
    if check:
        assert result.returncode == 0 and "succeeded" in (result.stdout + result.stderr).lower(), \
            result.stdout[-4000:] + result.stderr[-2000:]
    return result


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a started sweep; it must have succeeded. Its output."""
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "succeeded" in output.lower(), output[-6000:]
    return output


def recorded(target_run: Path) -> int:
    """Episodes journaled so far for one target (every replica's driver writes a shard journal)."""
    return sum(p.read_text().count("\n") for p in target_run.glob("episodes*.jsonl"))


def kill_when_generating(head: LocalHead, proc: subprocess.Popen, target_run: Path, actor: str,
                         at_least: int, timeout_s: float = 300) -> int:
    """Once ``at_least`` of the target's cells are journaled, kill the server actor named ``actor``
    (Ray restarts it: the sweep must notice). The cells journaled when it was killed."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and recorded(target_run) < at_least and proc.poll() is None:
        time.sleep(0.1)
    assert recorded(target_run) >= at_least, "generation never started"
    ray.init(address=head.gcs_address, namespace="skillsweep", log_to_driver=False)
    try:
        ray.kill(ray.get_actor(actor, namespace="skillsweep"), no_restart=False)
        return recorded(target_run)
    finally:
        ray.shutdown()
