"""Shared fixtures: the tiny model, real PEFT adapters made here, one real vLLM server."""

from __future__ import annotations

import json
import os
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
# Ray reads its auth mode once, when first imported; test modules import the sweep (and so
# ray) at collection, before any head starts, so the session states it here as make does.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# Every vLLM process this session starts (directly, or through Ray) carries this marker, so
# the session can tell its own leftovers from anyone else's.
os.environ["SKILLSWEEP_OWNER"] = f"pytest-{uuid.uuid4().hex[:12]}"

import psutil  # noqa: E402
import pytest  # noqa: E402

from harness.models import ResolvedModel, resolve  # noqa: E402
from harness.models.tiny import build_tiny_qwen3  # noqa: E402
from serve.server import COMPACT_JSON_ARGS, ServerSpec, VLLMServer, group_members, owned_processes  # noqa: E402
from train.random_adapter import make_random_adapter  # noqa: E402

SERVER_MAX_RANK = 16

# Test tiers (pyproject.toml registers the markers; `make test-fast` deselects them all).
# A test is marked by the fixtures it uses, however indirectly: a fixture that starts a vLLM
# server, a Ray head or a training marks every test that depends on it. Tests that start one
# inline carry the marker by hand (a module's `pytestmark` or `@pytest.mark.vllm`), as do the
# `slow` ones (held replies, a CLI subprocess per case), which need none of the three.
TIER_FIXTURES = {
    "server": "vllm",       # the session's vLLM server (below)
    "judged_run": "vllm",   # test_browser: generated and judged on that server
    "small_run": "vllm",    # test_judging: likewise
    "ray_head": "ray",      # test_sweep: a Ray head of the module's own
    "lora_adapter": "training",  # test_training: a LoRA trained on CPU
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in sorted(set(item.fixturenames) & TIER_FIXTURES.keys()):
            item.add_marker(TIER_FIXTURES[name])


@pytest.fixture(scope="session", autouse=True)
def no_processes_left_behind():
    """The suite ends with no process of its own left: vLLM engine cores and workers included."""
    yield
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents())}
    deadline = time.monotonic() + 30  # a server told to stop may take a moment to exit
    while (left := [p for p in owned_processes(os.environ["SKILLSWEEP_OWNER"]) if p not in mine]) \
            and time.monotonic() < deadline:
        time.sleep(1)
    described = []
    for pid in left:
        try:
            proc = psutil.Process(pid)
            described.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
            proc.kill()
        except psutil.Error:
            continue
    assert not described, f"processes of this test session left running: {described}"


@pytest.fixture(scope="session")
def tiny() -> ResolvedModel:
    return resolve("local:tiny-qwen3")


@pytest.fixture(scope="session")
def adapters(tmp_path_factory, tiny) -> dict:
    """Adapters covering every case the registry must handle, all real PEFT output."""
    root = tmp_path_factory.mktemp("adapters")
    made = {
        "a": make_random_adapter(tiny.location, root / "a", seed=1),
        "b": make_random_adapter(tiny.location, root / "b", seed=2),
        "zero": make_random_adapter(tiny.location, root / "zero", scale=0),
        "rank32": make_random_adapter(tiny.location, root / "rank32", rank=32, seed=3),
        "mts": make_random_adapter(tiny.location, root / "mts", seed=4, modules_to_save=["lm_head"]),
    }
    # A base of another shape: its adapters must be refused by name, and by shape when the
    # recorded base name is (wrongly) the served one.
    wide = root / "tiny-wide"
    build_tiny_qwen3(wide, hidden_size=256)
    made["wrong_base"] = make_random_adapter(wide, root / "wrong_base", seed=5)
    made["wrong_shape"] = make_random_adapter(wide, root / "wrong_shape", seed=6)
    cfg_file = made["wrong_shape"] / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = tiny.location
    cfg_file.write_text(json.dumps(cfg))

    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    ia3 = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny.location),
                         IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                                   feedforward_modules=["down_proj"]))
    ia3.save_pretrained(root / "ia3")
    made["not_lora"] = root / "ia3"
    made["empty"] = root / "empty"
    made["empty"].mkdir()
    made["missing"] = root / "does-not-exist"
    return made


@pytest.fixture(scope="session")
def server(tiny, tmp_path_factory):
    """One vLLM server on tiny-qwen3 for the whole run."""
    spec = ServerSpec(model=tiny.location, served_name="tiny", enable_lora=True,
                      max_lora_rank=SERVER_MAX_RANK, max_loras=2, max_model_len=4096,
                      extra_args=COMPACT_JSON_ARGS)
    srv = VLLMServer(spec, base_identity=tiny.identity,
                     log_path=tmp_path_factory.mktemp("logs") / "vllm.log")
    srv.start()
    pgid = srv.pid
    yield srv
    srv.stop()
    assert group_members(pgid) == [], "vLLM processes left behind after stop()"
