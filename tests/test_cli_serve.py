"""`skillsweep serve`, `probe` and `adapters` from the shell, as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from serve.server import free_port

CLI = [sys.executable, "-m", "harness.cli"]


def _run(*args, check=True):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check, timeout=300)


def _wait_for_endpoint(proc, deadline_s=600):
    lines, start = [], time.monotonic()
    while time.monotonic() - start < deadline_s:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve exited early:\n{''.join(lines)}\n{proc.stderr.read()}")
        lines.append(line)
        if line.startswith("served:"):
            return {k: v.strip() for k, _, v in (x.partition(": ") for x in lines if ": " in x)}
    raise AssertionError("serve did not report its endpoint")


@pytest.mark.vllm
def test_serve_probe_adapters_end_to_end(adapters):
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--model", "local:tiny-qwen3", "--port", str(port),
                             "--adapter", f"a={adapters['a']}", "--max-model-len", "1024"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        info = _wait_for_endpoint(proc)
        url = info["endpoint"]
        assert url == f"http://127.0.0.1:{port}/v1"
        base, adapter = info["served"].split()
        assert base == "tiny-qwen3" and adapter.startswith("a-")
        tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 3  # the CLI, the API server, its engine core

        probes = {m: json.loads(_run("probe", "--url", url, "--model", m, "--max-tokens", "16",
                                     "--json", "Is this valid?").stdout) for m in (base, adapter)}
        assert probes[base]["text"] != probes[adapter]["text"]
        assert probes[base]["completion_tokens"] == 16

        added = _run("adapters", "add", "--url", url, f"b={adapters['b']}").stdout.strip()
        assert added.startswith("b-")
        listed = json.loads(_run("adapters", "list", "--url", url, "--json").stdout)
        assert {x["served_name"] for x in listed} == {adapter, added}
        assert "removed " + added in _run("adapters", "remove", "--url", url, "b").stdout
        listed = json.loads(_run("adapters", "list", "--url", url, "--json").stdout)
        assert [x["served_name"] for x in listed] == [adapter]

        bad = _run("adapters", "add", "--url", url, f"bad={adapters['missing']}", check=False)
        assert bad.returncode == 2 and "[missing-path]" in bad.stderr
        chat = subprocess.run([*CLI, "chat", "--url", url, "--model", adapter, "--max-tokens", "8"],
                              input="hello\n/exit\n", capture_output=True, text=True, timeout=120)
        assert chat.returncode == 0 and chat.stdout.strip()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in tree if psutil.pid_exists(p)], timeout=30)
    assert alive == [], f"processes left behind: {alive}"


def test_serve_refuses_bad_adapter_before_starting(adapters):
    result = _run("serve", "--model", "local:tiny-qwen3", "--adapter", f"x={adapters['mts']}", check=False)
    assert result.returncode == 2 and "[modules-to-save]" in result.stderr
    result = _run("serve", "--model", "local:tiny-qwen3", "--adapter", "no-equals-sign", check=False)
    assert result.returncode == 2 and "expected NAME=PATH" in result.stderr
