"""The simulated engine: a real HTTP server speaking vLLM's API, driven by skillsweep's own
generation path, adapter registry and engine watch; its throughput model and the makespan
estimate as pure functions."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from harness.bench import load_bench
from harness.client import Sampling, achat, build_messages
from harness.generate import Target, generate_vllm, plan
from harness.runstore import RunStore
from jobs.estimate import (
    Cluster,
    EstimateError,
    Job,
    Training,
    Workload,
    estimate,
    lower_bound,
    parse_cluster,
    simulate,
    workload,
)
from jobs.sweep_config import load_config, make_plan
from serve.engine_watch import fetch_metrics, parse_metrics
from serve.registry import AdapterRegistry, RegistryError
from serve.server import VLLMServer
from serve.sim_engine import SimEngine, SimSpec, schema_instance
from serve.sim_model import (
    GPUS,
    TrainingModel,
    decode_rate,
    engine_params,
    expected_output_tokens,
    output_tokens,
    parse_size,
    prompt_tokens,
    step_time,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "eval_configs"
# Where paper.yaml looks for it: beside the checkout (as CI lays shared/ out).
SKILLMIX = Path(__file__).resolve().parents[2] / "shared" / "reference" / "skillmix"


@pytest.fixture(scope="module")
def sim(tiny, tmp_path_factory):
    """A simulated 0.8B engine on an H100, 100x faster than real time, whose base is tiny-qwen3
    (so real adapters for it validate against the base the registry reads from /v1/models)."""
    spec = SimSpec(model=tiny.location, served_name="sim", model_size="0.8b", time_scale=0.01,
                   max_lora_rank=16, max_loras=1, max_cpu_loras=4)
    server = VLLMServer(spec, base_identity=tiny.identity, log_path=tmp_path_factory.mktemp("sim") / "sim.log")
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ against the server


def test_registry_loads_lists_and_unloads_on_the_sim(sim, tiny, adapters):
    registry = AdapterRegistry.connect(sim.base_url)
    assert registry.base.identity == tiny.identity and registry.base_served_name == "sim"
    loaded, report = registry.load("a", adapters["a"])
    assert report.differing == report.probes  # the sim answers each model differently
    again, _ = registry.load("a", adapters["a"], check=False)  # the same weights: a no-op
    assert again.served_name == loaded.served_name
    other, _ = registry.load("b", adapters["b"], check=False)
    listed = {a.served_name: a for a in registry.list()}
    assert set(listed) == {loaded.served_name, other.served_name}
    assert listed[loaded.served_name].base == "sim" and listed[loaded.served_name].path == str(adapters["a"].resolve())
    assert registry.unload("b") == other.served_name
    assert [a.served_name for a in registry.list()] == [loaded.served_name]
    with pytest.raises(RegistryError, match="cannot be found"):
        registry._post("unload_lora_adapter", {"lora_name": other.served_name})
    # The server's own rank limit, as vLLM enforces it.
    refused = httpx.post(f"{sim.api_base}/load_lora_adapter",
                         json={"lora_name": "big", "lora_path": str(adapters["rank32"])}, timeout=10)
    assert refused.status_code == 400 and "max_lora_rank" in refused.text


def test_generate_vllm_runs_every_cell_once_against_the_sim(sim, adapters, tmp_path):
    registry = AdapterRegistry.connect(sim.base_url)
    loaded, _ = registry.load("a", adapters["a"], check=False)
    sampling = Sampling(max_tokens=256)
    targets = [Target("sim", registry.base.identity, "vllm", sampling, url=sim.api_base, served_name="sim"),
               Target("sim+a", registry.base.identity, "vllm", sampling, adapter_name="a", url=sim.api_base,
                      served_name=loaded.served_name)]
    cells = plan(load_bench("builtin"), "eval", ["baseline", "curated"], targets)
    before = fetch_metrics(sim.base_url)
    with RunStore(tmp_path / "run") as store:
        stats = asyncio.run(generate_vllm(cells, store, "sim-run", concurrency=16, progress_every_s=0))
        rows = store.rows()
    after = fetch_metrics(sim.base_url)
    assert stats.done == len(cells) == len(rows) and stats.failed == 0
    assert sorted(r["cell_id"] for r in rows) == sorted(c.id for c in cells)  # each cell exactly once
    assert all(0 < r["completion_tokens"] <= 256 and r["response"].startswith("Simulated reply") for r in rows)
    # The engine counted exactly what it answered.
    assert after.generation_tokens - before.generation_tokens == sum(r["completion_tokens"] for r in rows)
    assert after.prompt_tokens - before.prompt_tokens == sum(r["prompt_tokens"] for r in rows)
    assert after.running == after.waiting == 0
    by_cell = {c.id: c for c in cells}
    assert all(r["prompt_tokens"] == prompt_tokens(list(by_cell[r["cell_id"]].prompt.messages)) for r in rows)


def test_sim_answers_like_vllm_on_errors_and_json_schema(sim):
    async def main():
        with pytest.raises(Exception) as missing:
            await achat(sim.api_base, "no-such-model", build_messages("hi"))
        assert getattr(missing.value, "status_code", None) == 404
        with pytest.raises(Exception) as too_long:
            await achat(sim.api_base, "sim", build_messages("word " * 20000), Sampling(max_tokens=16))
        assert getattr(too_long.value, "status_code", None) == 400

    asyncio.run(main())
    schema = {"type": "object", "required": ["ok", "score", "tags", "why"],
              "properties": {"ok": {"type": "boolean"}, "score": {"type": "number", "minimum": 0.5},
                             "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                             "why": {"type": "string", "enum": ["because"]}}}
    reply = httpx.post(f"{sim.api_base}/chat/completions", timeout=30, json={
        "model": "sim", "messages": build_messages("judge this"), "max_tokens": 64,
        "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}}).json()
    assert json.loads(reply["choices"][0]["message"]["content"]) == {"ok": True, "score": 0.5, "tags": [""],
                                                                     "why": "because"}
    assert schema_instance({"type": ["null", "integer"], "minimum": 3}) == 3


@pytest.mark.slow
def test_metrics_show_running_and_waiting_under_load(tmp_path, tiny):
    """Ten long requests on an engine that batches four: four run, six wait, then all finish."""
    spec = SimSpec(model=tiny.location, served_name="slow", model_size="0.8b", time_scale=0.3, max_num_seqs=4,
                   mean_output_tokens=8000, startup_s=0.0)
    with VLLMServer(spec, log_path=tmp_path / "slow.log") as server:
        async def main():
            # litellm's first call sets itself up: done first, so the ten arrive together.
            await achat(server.api_base, "slow", build_messages("warm up"), Sampling(max_tokens=1))
            start = fetch_metrics(server.base_url)
            chats = [asyncio.ensure_future(achat(server.api_base, "slow", build_messages(f"question {i}"),
                                                 Sampling(max_tokens=2000))) for i in range(10)]
            seen = []
            async with httpx.AsyncClient(timeout=10) as client:
                while not all(c.done() for c in chats):
                    seen.append(parse_metrics((await client.get(server.base_url + "/metrics")).text))
                    await asyncio.sleep(0.05)
            return [c.result() for c in chats], seen, start

        replies, seen, before = asyncio.run(main())
        after = fetch_metrics(server.base_url)
    full = [s for s in seen if s.running + s.waiting == 10]
    assert full, "never saw all ten requests in the engine at once"
    # A request that has arrived waits for the next step to be admitted (as in vLLM), so a snapshot
    # may catch the first batch filling; once full it is four running and six waiting, never more.
    assert any(s.running == 4 and s.waiting == 6 for s in full)
    assert max(s.running for s in seen) == 4
    assert any(b.generation_tokens < a.generation_tokens for b, a in pairwise(seen))  # counters move
    assert after.generation_tokens - before.generation_tokens == sum(r.completion_tokens for r in replies)
    assert after.running == after.waiting == 0
    assert all(r.completion_tokens == 2000 and r.finish_reason == "length" for r in replies)


def test_a_start_time_reaches_the_engine_but_not_its_recorded_arguments():
    # A sweep's server actor passes its own process's start (the modelled start-up includes it);
    # a timestamp is no engine argument, so the manifest's engine args stay the same run to run.
    spec = SimSpec(model="m", served_name="s", started_at=1234.5)
    command = spec.command(8000)
    assert command[command.index("--started-at") + 1] == "1234.5"
    assert "started_at" not in spec.engine_args() and "--started-at" not in SimSpec("m", "s").command(8000)


def test_cli_entry_point_refuses_bad_values():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bad = subprocess.run([sys.executable, "-m", "serve.sim_engine", "--port", "1", "--served-model-name", "x",
                          "--model-size", "huge"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "'huge'" in bad.stderr


# ------------------------------------------------------------------ the throughput model


def test_engine_params_follow_the_documented_arithmetic():
    p = engine_params("h100", "4b")
    assert p.weights_s == pytest.approx(8e9 / (3.35e12 * 0.7))
    assert p.prefill_tok_s == pytest.approx(989e12 * 0.40 / 8e9)
    assert p.startup_s == 70.0
    small = engine_params("h100", "0.8B")
    assert small.weights_s < p.weights_s and small.prefill_tok_s > p.prefill_tok_s
    assert engine_params("h200", "4b").weights_s < p.weights_s  # more bandwidth, faster decode
    assert parse_size("135M") == 135e6
    with pytest.raises(ValueError, match="'tiny'"):
        parse_size("tiny")
    with pytest.raises(ValueError, match="unknown GPU class"):
        engine_params("tpu", "4b")


def test_step_time_and_rate_grow_with_the_batch():
    p = engine_params("h100", "2b")
    assert step_time(p, 1) < step_time(p, 64) < step_time(p, 256)
    assert step_time(p, 8, 4096) == pytest.approx(step_time(p, 8) + 4096 / p.prefill_tok_s)
    assert step_time(p, 8, lora=True) == pytest.approx(step_time(p, 8) * (1 + p.lora_overhead))
    rates = [decode_rate(p, b) for b in (1, 8, 32, 128, 256)]
    assert rates == sorted(rates) and rates[-1] / rates[0] > 20  # batching pays, sublinearly
    assert rates[-1] < 256 * rates[0]


def test_output_lengths_are_deterministic_and_match_their_expectation():
    keys = [f"prompt-{i}" for i in range(4000)]
    assert [output_tokens(k, 1024, 800) for k in keys[:50]] == [output_tokens(k, 1024, 800) for k in keys[:50]]
    for cap in (100, 1024, 5000):
        mean = sum(output_tokens(k, cap, 800) for k in keys) / len(keys)
        assert mean == pytest.approx(expected_output_tokens(cap, 800), rel=0.03)
    assert prompt_tokens([{"role": "user", "content": "x" * 40}]) == 10 + 4


def _drain(engine: SimEngine) -> list:
    steps = []
    while engine.running or engine.waiting:
        step = engine.schedule()
        steps.append(step)
        engine.apply(step, engine.repeatable(step))
    return steps


def test_engine_core_batches_chunks_prefill_and_respects_lora_slots():
    p = engine_params("h100", "4b", max_num_seqs=2)

    async def main():
        one = SimEngine(p, 1.0)
        done = one.submit("m", None, 20000, 10)
        steps = _drain(one)
        assert [sum(s.prefill.values()) for s in steps[:3]] == [8192, 8192, 20000 - 2 * 8192]  # chunked
        assert done.result() == 10 and one.prompt_tokens == 20000 and one.generation_tokens == 10
        assert one.virtual_s == pytest.approx(sum(step_time(p, 0, c) for c in (8192, 8192, 3616)) + 9 * step_time(p, 1))

        two = SimEngine(p, 1.0, max_loras=1, max_cpu_loras=1)
        futures = [two.submit("x", "x", 10, 5), two.submit("y", "y", 10, 5), two.submit("x", "x", 10, 5)]
        first = two.schedule()
        assert {r.adapter for r in two.running} == {"x"} and len(two.running) == 2  # y waits for a slot
        assert [r.adapter for r in two.waiting] == ["y"]
        two.apply(first)
        _drain(two)
        assert all(f.done() for f in futures) and two.finished == 3
        assert list(two.gpu_slots) == ["y"] and list(two.cpu_cache) == ["y"]  # LRU of one

    asyncio.run(main())


# ------------------------------------------------------------------ the estimate


def test_parse_cluster():
    assert parse_cluster("8xH100") == Cluster(1, 8, "h100")
    assert parse_cluster("2x4xH100") == Cluster(2, 4, "h100") and parse_cluster("2x4xh200").gpus == 8
    for bad in ("H100", "8xB200", "0x8xH100", "eight"):
        with pytest.raises(EstimateError, match=repr(bad)):
            parse_cluster(bad)
    assert set(GPUS) >= {"h100", "a100"}


@pytest.fixture(scope="module")
def demo_plan():
    return make_plan(load_config(CONFIGS / "demo.yaml"))


def test_estimate_respects_bound_and_critical_path(demo_plan):
    result = estimate(demo_plan, parse_cluster("4xH100"))
    assert 0 < result.bound.seconds <= result.makespan_s <= result.one_per_base_s
    assert result.bound.critical_path_s <= result.makespan_s
    schedule = result.schedule
    for label, (_start, end) in schedule.trainings.items():
        assert schedule.finished[label] > end  # an adapter's cells only after its training
    assert 0 < result.ratio <= 1
    described = result.describe()
    assert described["gpus"] == 4 and described["lower_bound_s"] <= described["makespan_s"]


def test_more_gpus_never_slower(demo_plan):
    makespans = [estimate(demo_plan, Cluster(1, g, "h100")).makespan_s for g in (2, 3, 4, 8, 16)]
    assert makespans == sorted(makespans, reverse=True)
    with pytest.raises(EstimateError, match="needs at least 2"):
        estimate(demo_plan, Cluster(1, 1, "h100"))


def _synthetic(training_s: float) -> Workload:
    p = engine_params("h100", "2b")
    jobs = [Job("base", "m", 400, 500, 700, 32), Job("m+a", "m", 400, 500, 700, 32, lora=True, training="a"),
            Job("m+a/judge", "m", 400, 1600, 300, 64, after="m+a")]
    return Workload({"m": p}, (Training("a", training_s),), tuple(jobs))


def test_long_training_is_the_critical_path():
    work = _synthetic(3000.0)
    for gpus in (2, 4, 8):
        bound = lower_bound(work, gpus)
        schedule = simulate(work, gpus, "pool")
        assert bound.critical_path_s > 3000 and bound.seconds <= schedule.makespan_s
        assert schedule.finished["m+a"] > 3000 and schedule.finished["m+a/judge"] >= schedule.finished["m+a"]
    quick = _synthetic(10.0)
    assert simulate(quick, 2).makespan_s < simulate(work, 2).makespan_s


def test_estimate_names_what_it_cannot_size():
    with pytest.raises(EstimateError, match="model 'tiny', field 'size'"):
        workload(make_plan(load_config(CONFIGS / "smoke.yaml")), "h100", 100.0, TrainingModel())


def test_plan_cli_prints_the_estimate():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "harness.cli", "plan", str(CONFIGS / "demo.yaml"), "--estimate", "--cluster", "2x4xH100"]
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr
    out = " ".join(text.stdout.split())
    assert "estimate on 2 nodes × 4 H100" in out and "makespan" in out and "lower bound" in out
    as_json = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env, timeout=120)
    e = json.loads(as_json.stdout)["estimate"]
    assert e["gpus"] == 8 and 0 < e["lower_bound_s"] <= e["makespan_s"]
    bad = subprocess.run(cmd[:-1] + ["lots"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "'lots'" in bad.stderr


@pytest.mark.skipif(not SKILLMIX.is_dir(), reason=f"{SKILLMIX} (the study's bench) is not on this machine")
def test_paper_sweep_estimate():
    result = estimate(make_plan(load_config(CONFIGS / "paper.yaml")), parse_cluster("2x4xH100"))
    assert result.bound.seconds <= result.makespan_s <= result.one_per_base_s
    assert any("haiku" in item for item in result.left_out)  # API rows use no GPU
    assert result.schedule.max_replicas["Qwen3.5-0.8B+v1_7@s0"] >= 1  # a full checkpoint gets its own server
