"""The LoRA capacity rule (GPU slots and host cache from adapters and memory), and a real vLLM
server serving more adapters than it has GPU slots."""

from __future__ import annotations

import asyncio

import pytest

from harness.client import Sampling, achat, build_messages
from serve.adapters import (
    BATCH_ADAPTERS,
    LORA_GPU_SHARE,
    AdapterError,
    lora_capacity,
    lora_rank,
    lora_slot_bytes,
    model_config,
    replica_lora_capacity,
)
from serve.registry import AdapterRegistry
from serve.server import ServerSpec, VLLMServer
from serve.serving import server_spec
from train.random_adapter import make_random_adapter

# A 4B-class geometry (Qwen3-4B's config.json figures).
QWEN_4B = {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128}
GIB = 1024 ** 3


def test_rank_rounds_up_to_what_vllm_accepts():
    assert lora_rank([8, 8, 32]) == 32
    assert lora_rank([], min_rank=16) == 16 and lora_rank([]) == 8
    assert lora_rank([100]) == 128
    with pytest.raises(ValueError, match="513"):
        lora_rank([513])


def test_slots_follow_adapter_count_up_to_what_a_batch_mixes():
    assert lora_capacity(3, [16]) == lora_capacity(3, [16], model_config=QWEN_4B, gpu_bytes=80 * GIB,
                                                   host_bytes=256 * GIB)
    few = lora_capacity(3, [16])
    assert (few.max_lora_rank, few.max_loras, few.max_cpu_loras) == (16, 3, 3)
    many = lora_capacity(20, [16, 64])
    assert (many.max_lora_rank, many.max_loras, many.max_cpu_loras) == (64, BATCH_ADAPTERS, 20)
    assert lora_capacity(0).max_loras == lora_capacity(0).max_cpu_loras == 1
    assert lora_capacity(2, extra=2).max_loras == 4


def test_memory_limits_slots_and_host_cache():
    slot = lora_slot_bytes(QWEN_4B, 64)
    # per layer: q (2560+4096) + k, v 2x(2560+1024) + o (4096+2560) + gate, up 2x(2560+9728) + down (9728+2560)
    assert slot == 2 * 64 * (6656 + 7168 + 6656 + 24576 + 12288) * 36
    # A GPU whose LoRA share holds three slots of this size.
    small = lora_capacity(10, [64], model_config=QWEN_4B, gpu_bytes=3.5 * slot / LORA_GPU_SHARE)
    assert small.max_loras == 3 and small.max_cpu_loras == 10
    host = lora_capacity(10, [64], model_config=QWEN_4B, gpu_bytes=80 * GIB, host_bytes=slot * 90)
    assert (host.max_loras, host.max_cpu_loras) == (BATCH_ADAPTERS, 9)
    tighter = lora_capacity(10, [64], model_config=QWEN_4B, gpu_bytes=80 * GIB, host_bytes=slot * 50)
    assert tighter.max_cpu_loras == tighter.max_loras == BATCH_ADAPTERS  # never below the slots
    assert lora_capacity(10, [64], model_config=QWEN_4B, gpu_bytes=1).max_loras == 1


def test_replica_capacity_reads_the_checkpoint(tiny):
    config = model_config(tiny.location)
    assert config and config["hidden_size"] == 128
    capacity = replica_lora_capacity(tiny.location, [8, 8, 8])
    assert (capacity.max_lora_rank, capacity.max_loras, capacity.max_cpu_loras) == (8, 3, 3)
    assert model_config("/nonexistent") is None


def test_one_rule_for_every_server(tiny, adapters):
    """serve.serving.server_spec: the capacity rule for the ranks given (or the adapters'), a
    rank floor of 16 and extra slots when adapters come later, and every adapter validated."""
    spec = server_spec(tiny, "t")  # nothing to hold: no LoRA
    assert not spec.enable_lora and spec.max_lora_rank == 8
    later = server_spec(tiny, "t", room_for=2)  # `skillsweep serve`: room for `adapters add`
    assert later.enable_lora and (later.max_lora_rank, later.max_loras) == (16, 2)
    sweep = server_spec(tiny, "t", lora_ranks=[32, 8])  # a sweep's server: its recipes' ranks
    assert sweep.enable_lora and (sweep.max_lora_rank, sweep.max_loras) == (32, 2)
    held = server_spec(tiny, "t", [("a", adapters["a"]), ("r", adapters["rank32"])], max_model_len=1024)
    assert (held.max_lora_rank, held.max_loras, held.max_model_len) == (32, 2, 1024)
    with pytest.raises(AdapterError, match="rank-too-large"):
        server_spec(tiny, "t", [("r", adapters["rank32"])], max_lora_rank=16)
    with pytest.raises(AdapterError, match="modules-to-save"):
        server_spec(tiny, "t", [("m", adapters["mts"])])


@pytest.fixture(scope="module")
def three_adapters(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    return [make_random_adapter(tiny.location, root / f"ad{i}", seed=10 + i) for i in range(3)]


@pytest.mark.vllm
def test_vllm_serves_more_adapters_than_gpu_slots(tiny, three_adapters, tmp_path):
    """max_loras=1, max_cpu_loras=3: three adapters registered at once, requested together."""
    spec = ServerSpec(model=tiny.location, served_name="tiny1", enable_lora=True, max_lora_rank=8, max_loras=1,
                      max_cpu_loras=3, max_model_len=1024)
    with VLLMServer(spec, base_identity=tiny.identity, log_path=tmp_path / "vllm.log") as server:
        registry = AdapterRegistry(server.api_base, tiny, "tiny1", 8)
        served = []
        for i, path in enumerate(three_adapters):
            loaded, report = registry.load(f"ad{i}", path)
            assert not report.identical, report.describe()  # each is applied
            served.append(loaded.served_name)
        assert sorted(a.served_name for a in registry.list()) == sorted(served)

        async def together():
            names = [*served, "tiny1"] * 3
            replies = await asyncio.gather(*(achat(server.api_base, name, build_messages("List three steps."),
                                                   Sampling(max_tokens=12)) for name in names))
            return dict(zip(names, replies, strict=True)), replies

        by_name, replies = asyncio.run(together())
        assert len(replies) == 12 and all(r.completion_tokens for r in replies)
        assert len({by_name[name].text for name in served}) > 1  # not all the same adapter
