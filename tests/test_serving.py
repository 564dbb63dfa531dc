"""The real path: a vLLM server on tiny-qwen3, runtime LoRA, requests through litellm."""

import pytest

from harness.client import Sampling, build_messages, chat
from serve.adapters import AdapterError
from serve.registry import AdapterRegistry, RegistryError
from serve.server import ServerSpec, ServerStartError, VLLMServer, server_record

from conftest import SERVER_MAX_RANK

PROMPTS = ["Does the argument commit a fallacy? Answer yes or no.", "Rank the two options."]


@pytest.fixture
def registry(server, tiny):
    reg = AdapterRegistry(server.api_base, tiny, "tiny", SERVER_MAX_RANK)
    yield reg
    for adapter in reg.list():  # each test starts from an empty server
        reg.unload(adapter.served_name)


def _greedy(server, model, prompt):
    return chat(server.api_base, model, build_messages(prompt), Sampling(max_tokens=24)).text


def test_adapters_change_greedy_output_deterministically(server, registry, adapters):
    a, report_a = registry.load("a", adapters["a"])
    b, report_b = registry.load("b", adapters["b"])
    assert not report_a.identical and not report_b.identical
    for prompt in PROMPTS:
        base = _greedy(server, "tiny", prompt)
        out_a = _greedy(server, a.served_name, prompt)
        out_b = _greedy(server, b.served_name, prompt)
        assert out_a != base and out_b != base and out_a != out_b
        assert _greedy(server, "tiny", prompt) == base
        assert _greedy(server, a.served_name, prompt) == out_a
        assert _greedy(server, b.served_name, prompt) == out_b


def test_unload_and_registry_state(registry, adapters):
    a, _ = registry.load("a", adapters["a"], check=False)
    b, _ = registry.load("b", adapters["b"], check=False)
    assert {x.served_name for x in registry.list()} == {a.served_name, b.served_name}
    again, _ = registry.load("a", adapters["a"], check=False)  # same weights: no-op
    assert again == a and len(registry.list()) == 2
    assert registry.unload("a") == a.served_name  # by alias
    state = registry.list()
    assert [x.served_name for x in state] == [b.served_name]
    assert state[0].path == str(adapters["b"].resolve()) and state[0].base == "tiny"
    with pytest.raises(RegistryError, match="no single loaded adapter named 'a'"):
        registry.unload("a")


def test_unloaded_adapter_is_no_longer_served(server, registry, adapters):
    a, _ = registry.load("a", adapters["a"], check=False)
    registry.unload(a.served_name)
    with pytest.raises(Exception, match="(?i)not ?found|does not exist|404"):
        _greedy(server, a.served_name, PROMPTS[0])


def test_preflight_flags_an_adapter_identical_to_base(registry, adapters):
    _, report = registry.load("zero", adapters["zero"])
    assert report.identical and report.probes == 3
    assert "same greedy output" in report.describe()


@pytest.mark.parametrize("key, rule", [
    ("wrong_base", "base-mismatch"),
    ("wrong_shape", "base-mismatch"),
    ("rank32", "rank-too-large"),
    ("not_lora", "not-lora"),
    ("mts", "modules-to-save"),
    ("missing", "missing-path"),
    ("empty", "not-peft"),
])
def test_invalid_adapters_are_refused_and_server_stays_healthy(server, registry, adapters, key, rule):
    with pytest.raises(AdapterError) as info:
        registry.load(key, adapters[key])
    assert info.value.rule == rule
    assert server.healthy()
    assert registry.list() == []
    assert _greedy(server, "tiny", PROMPTS[0])  # still serving


def test_connect_reads_base_and_limits_from_running_server(server, tiny, adapters):
    reg = AdapterRegistry.connect(server.base_url)
    assert reg.base_served_name == "tiny" and reg.base.identity == tiny.identity
    assert reg.max_rank == SERVER_MAX_RANK
    with pytest.raises(AdapterError, match="rank-too-large"):
        reg.load("r", adapters["rank32"])


@pytest.mark.vllm
def test_failed_start_reports_log_tail_and_leaves_nothing(tmp_path):
    spec = ServerSpec(model=str(tmp_path / "no-such-model"), served_name="broken")
    server = VLLMServer(spec, log_path=tmp_path / "broken.log", startup_timeout_s=300)
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code" in message and "last lines of" in message
    assert info.value.log_tail and info.value.log_tail in message
    assert "no-such-model" in info.value.log_tail
    assert server.pid is None


def test_stale_server_record_is_ignored_and_removed(server, tmp_path, monkeypatch):
    import json
    import subprocess

    assert server_record(server.port)["pid"] == server.pid  # a live server's record is kept
    monkeypatch.setenv("SKILLSWEEP_HOME", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = tmp_path / "servers" / "45678.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"pid": dead.pid, "max_lora_rank": 64}))
    assert server_record(45678) is None and not record.exists()
