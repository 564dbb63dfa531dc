"""Run a command so that nothing it starts can outlive it: ``python -m serve.supervise CMD ...``.

vLLM's API server forks an engine-core process, which spawns workers. If the API server is
killed (or its owner, a Ray actor, is), those children are re-parented to pid 1 and keep the
model's memory: on a GPU the next server then fails to start. This supervisor sits between
the owner and vLLM:

* it asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a SIGKILLed
  owner still stops it;
* it is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so orphaned grandchildren re-parent to
  it rather than to pid 1 and it can still find them;
* on SIGTERM / SIGINT, or when the command exits, it stops every descendant: TERM, a grace
  period, then KILL;
* the command itself gets SIGTERM if the supervisor dies: Ray SIGKILLs the direct children
  of a worker it kills, which is this supervisor, and a SIGKILL cannot be caught. vLLM's API
  server then shuts its engine core and workers down itself.

Its exit code is the command's. Linux only (elsewhere it simply runs the command).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0
# The pid of the process that started the supervisor (set by serve.server).
OWNER_PID_ENV = "SKILLSWEEP_SUPERVISOR_PARENT"


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _descendants() -> list:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def stop_descendants(grace_s: float = GRACE_S) -> None:
    """Stop every descendant process: TERM, a grace period, then KILL for what is left."""
    procs = _descendants()
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    # Children forked while we were waiting are caught by the second sweep.
    for p in alive + _descendants():
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(_descendants(), timeout=5)


def main(argv: list[str]) -> int:
    """Run a command under supervision and return its exit status (128+N when killed by signal N)."""
    if not argv:
        print("usage: python -m serve.supervise CMD [ARGS...]", file=sys.stderr)
        return 2
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    owner = os.environ.get(OWNER_PID_ENV)
    if owner and os.getppid() != int(owner):  # the owner died before the death signal was armed
        return 1
    child = subprocess.Popen(argv, preexec_fn=lambda: _prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
    while not stopping and child.poll() is None:
        time.sleep(0.2)
    stop_descendants()
    code = child.wait()
    # Reap whatever re-parented to us as a subreaper.
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
