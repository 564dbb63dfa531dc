"""A vLLM OpenAI-compatible server as a managed subprocess.

The server runs in its own process group (vLLM forks an engine-core process), so stopping
it signals the whole group and nothing is left behind. It binds to 127.0.0.1, unless told to
bind a node's address for other nodes of a cluster, which it then does only behind an API key.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psutil

from harness.errors import SkillsweepError
from harness.libenv import server_env_defaults
from harness.paths import skillsweep_home
from serve.engine_watch import EngineSample, fetch_metrics
from serve.hardware import cpu_preloads, serving_dtype

HOST = "127.0.0.1"
# Every server started by skillsweep carries this variable; its value names the owner (a test
# session, a sweep) so that leftovers of that owner can be found and reaped by it alone.
OWNER_ENV = "SKILLSWEEP_OWNER"
# For a server used as a judge: JSON-schema replies without free whitespace, which a weak
# model would otherwise emit until max_tokens.
COMPACT_JSON_ARGS = ("--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}')


class ServerStartError(SkillsweepError, RuntimeError):
    """The server exited or never became healthy; the message carries its log tail."""

    def __init__(self, message: str, log_tail: str, log_path: Path):
        super().__init__(f"{message}\n--- last lines of {log_path} ---\n{log_tail}")
        self.log_tail = log_tail
        self.log_path = log_path


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerSpec:
    """Everything that determines how a server generates: recorded in run manifests."""

    model: str
    served_name: str
    enable_lora: bool = False
    max_lora_rank: int = 16
    max_loras: int = 1
    max_cpu_loras: int | None = None
    max_model_len: int | None = 4096
    # bf16 only where the hardware computes it natively (serve.hardware.serving_dtype).
    dtype: str = field(default_factory=serving_dtype)
    seed: int = 0
    # CPU builds size their KV cache from VLLM_CPU_KVCACHE_SPACE (GiB); GPUs ignore it.
    kv_cache_gib: int = 1
    # CPU builds: the cores its compute threads bind (VLLM_CPU_OMP_THREADS_BIND); None = vLLM's auto.
    cpu_bind: str | None = None
    extra_args: tuple[str, ...] = ()

    def engine_args(self) -> dict:
        return asdict(self)

    def command(self, port: int, host: str = HOST) -> list[str]:
        cmd = [
            # The supervisor takes vLLM's engine-core and worker processes down with the server.
            sys.executable, "-m", "serve.supervise",
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--served-model-name", self.served_name,
            "--host", host,
            "--port", str(port),
            "--dtype", self.dtype,
            "--seed", str(self.seed),
        ]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.enable_lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank),
                    "--max-loras", str(self.max_loras)]
            if self.max_cpu_loras:
                cmd += ["--max-cpu-loras", str(self.max_cpu_loras)]
        return cmd + list(self.extra_args)


def server_env(spec: ServerSpec, api_key: str | None = None) -> dict[str, str]:
    """The environment a vLLM server starts with: library defaults, CPU binding, preloads, owner,
    and its API key (vLLM reads ``VLLM_API_KEY``; the environment keeps it off the command line)."""
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    env.update(server_env_defaults(env))
    env.update({"VLLM_CPU_KVCACHE_SPACE": str(spec.kv_cache_gib), "PYTHONUNBUFFERED": "1"})
    if spec.cpu_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpu_bind
    preload = [p for p in (env.get("LD_PRELOAD") or "").split(":") if p]
    env["LD_PRELOAD"] = ":".join(cpu_preloads() + [p for p in preload if p not in cpu_preloads()])
    if not env["LD_PRELOAD"]:
        del env["LD_PRELOAD"]
    env.setdefault(OWNER_ENV, f"pid-{os.getpid()}")
    env["SKILLSWEEP_SUPERVISOR_PARENT"] = str(os.getpid())
    # serve.supervise must be importable from wherever the server is started.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _state_dir() -> Path:
    return skillsweep_home() / "servers"


def server_record(port: int | None) -> dict | None:
    """What the server on ``port`` of this machine was started with, if skillsweep started it
    (None for no port: a URL without one).

    A record whose process is gone (its owner was killed before it could clean up) is removed:
    the port may now belong to another server."""
    if port is None:
        return None
    file = _state_dir() / f"{port}.json"
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except (OSError, ValueError, OverflowError):
        file.unlink(missing_ok=True)
        return None
    return record


@dataclass
class VLLMServer:
    spec: ServerSpec
    port: int | None = None
    log_path: Path | None = None
    startup_timeout_s: float = 600.0
    # Identity of the base model (harness.models.model_identity), for adapter validation.
    base_identity: str | None = None
    # Another address than 127.0.0.1 (a node's, for the other nodes of a cluster) needs a key.
    host: str = HOST
    api_key: str | None = field(default=None, repr=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log_file: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> VLLMServer:
        if self._proc is not None:
            raise RuntimeError("server already started")
        if self.host != HOST and not self.api_key:
            raise ValueError(f"a server bound to {self.host} (not {HOST}) needs an API key: never an open port")
        self.port = self.port or free_port(self.host)
        if self.log_path is None:
            logs = skillsweep_home() / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self.log_path = logs / f"vllm-{self.spec.served_name}-{self.port}-{int(time.time())}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.spec.command(self.port, self.host),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(self.spec, self.api_key),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self._write_record()
        return self

    def _wait_healthy(self) -> None:
        proc, log_path = self._proc, self.log_path
        assert proc is not None and log_path is not None, "start() sets both"
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"vLLM server for {self.spec.model!r} exited with code {code} during startup",
                        self.log_tail(), log_path)
                try:
                    if client.get(self.base_url + "/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"vLLM server for {self.spec.model!r} not healthy after "
                        f"{self.startup_timeout_s:.0f}s", self.log_tail(), log_path)
                time.sleep(0.5)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        try:
            return httpx.get(self.base_url + "/health", timeout=5.0).status_code == 200
        except httpx.TransportError:
            return False

    def metrics(self) -> EngineSample | None:
        return fetch_metrics(self.base_url)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _write_record(self) -> None:
        _state_dir().mkdir(parents=True, exist_ok=True)
        record = {"url": self.base_url, "pid": self.pid, "base_identity": self.base_identity,
                  "log": str(self.log_path), **self.spec.engine_args()}
        (_state_dir() / f"{self.port}.json").write_text(json.dumps(record, indent=2))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server's whole process group: TERM, then KILL after ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        pgid = proc.pid  # start_new_session makes the leader's pid the group id
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._log_file:
            self._log_file.close()
        try:
            (_state_dir() / f"{self.port}.json").unlink()
        except OSError:
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a SIGKILLed owner (a Ray actor, a
    killed CLI) cannot leave a server running. Linux only; elsewhere stop() is the only path."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def owned_processes(owner: str) -> list[int]:
    """Live processes started by skillsweep for ``owner`` (see OWNER_ENV), found by environment."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                if "Z" not in (entry / "stat").read_text().rsplit(")", 1)[-1].split()[:1]:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found
