"""The sweep's and the generation driver's decisions, as pure functions: no Ray, no vLLM."""

import pytest

from harness.generate import GenerationStats, surplus_leases
from harness.generation_job import GenerationSummary
from harness.judging.job import JudgeStats, JudgingSummary
from harness.progress import Snapshot, progress_line
from harness.retry import FanoutCounters
from jobs.decisions import after_generation, after_judging, target_complete, with_history
from jobs.resources import DRIVER_CPUS, HARNESS_SHARE, driver_nodes, resource_model
from serve.engine_watch import EngineSample, Health, WatchPolicy, assess, next_limit, parse_metrics
from serve.hardware import CpuInfo, partition_cores, serving_dtype

# ---------------------------------------------------------------- cores, dtype, declarations

@pytest.mark.parametrize("cores,servers", [(2, 1), (4, 1), (8, 3), (16, 2), (3, 2)])
def test_partition_gives_servers_disjoint_cores_and_leaves_a_rest(cores, servers):
    plan = partition_cores(tuple(range(cores)), servers)
    sets = [set(s) for s in plan.servers] + [set(plan.rest)]
    assert not plan.shared and len(plan.servers) == servers and all(sets)
    assert sum(len(s) for s in sets) == cores and set().union(*sets) == set(range(cores))
    assert plan.bind_string(0) == ",".join(map(str, plan.servers[0]))


def test_partition_with_too_few_cores_overlaps_and_says_so():
    plan = partition_cores((0, 1), 2)
    assert plan.shared and plan.servers == ((0,), (1,))


@pytest.mark.parametrize("cores,servers", [(2, 1), (2, 2), (1, 1), (8, 3), (16, 4)])
def test_cpu_declarations_never_oversubscribe_the_node(cores, servers):
    model = resource_model(node_cores=tuple(range(cores)), gpus=0, servers=servers)
    declared = sum(s.num_cpus for s in model.servers) + model.trainer.num_cpus
    # Room is left for at least one driver beside every server and the trainer.
    assert declared + DRIVER_CPUS <= cores + 1e-9
    assert model.driver.num_cpus == DRIVER_CPUS and all(s.num_gpus == 0 for s in model.servers)


@pytest.mark.parametrize("policy", ["in-turn", "partition"])
@pytest.mark.parametrize("cores,servers", [(2, 1), (2, 2), (1, 1), (8, 3), (16, 4)])
def test_cpu_declarations_fit_the_node_under_both_policies(cores, servers, policy):
    model = resource_model(node_cores=tuple(range(cores)), gpus=0, servers=servers, cpu_policy=policy)
    declared = sum(s.num_cpus for s in model.servers) + model.trainer.num_cpus
    assert declared + DRIVER_CPUS <= cores + 1e-9
    bound = [set(s.cores) for s in model.servers]
    assert all(bound) and (model.cores.shared or sum(map(len, bound)) == len(set().union(*bound)))


def test_driver_hosts_go_where_gpu_processes_cannot_take_every_cpu():
    nodes = [("a", 1.0, 1.0), ("b", 2.0, 0.0), ("c", 8.0, 4.0), ("d", 4.0, 4.0), ("e", 0.04, 0.0)]
    # one CPU per GPU process: "a" and "d" can be filled by servers; "e" has too little to give
    assert driver_nodes(nodes, serve_gpus=1, train_gpus=1) == ["b", "c"]
    # half-GPU servers: two processes per GPU, so "c" may need all eight CPUs
    assert driver_nodes(nodes, serve_gpus=0.5, train_gpus=1) == ["b"]
    # nothing runs on GPUs: only the CPU count matters
    assert driver_nodes(nodes, serve_gpus=0, train_gpus=0) == ["a", "b", "c", "d"]


def test_two_core_node_partitioned_binds_the_server_to_one_core_and_trains_on_the_other():
    model = resource_model(node_cores=(0, 1), gpus=0, servers=1, cpu_policy="partition")
    assert model.cpu_bind(0) == "0" and model.trainer.cores == (1,) and not model.in_turn
    assert model.servers[0].num_cpus == 1.0 and model.trainer.num_cpus == 1 - HARNESS_SHARE


def test_two_core_node_in_turn_gives_every_core_to_each_side():
    model = resource_model(node_cores=(0, 1), gpus=0, servers=1)
    assert model.in_turn and model.cpu_bind(0) == "0,1" and model.trainer.cores == (0, 1)
    two = resource_model(node_cores=(0, 1, 2, 3), gpus=0, servers=2)
    assert [two.cpu_bind(0), two.cpu_bind(1)] == ["0,1", "2,3"]  # servers still disjoint


def test_turn_gate_lets_a_training_in_between_serving_steps():
    import asyncio

    from jobs.turns import TurnGate

    order = []

    async def serve(name, hold, gate):
        async with gate.serving():
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    async def train(gate):
        async with gate.training():
            order.append("train+")
            await asyncio.sleep(0.05)
            order.append("train-")

    async def main(enabled):
        gate = TurnGate(enabled)
        first = asyncio.ensure_future(serve("a", 0.05, gate))
        await asyncio.sleep(0.01)
        training = asyncio.ensure_future(train(gate))
        await asyncio.sleep(0.01)
        late = asyncio.ensure_future(serve("b", 0.01, gate))  # arrives while the training waits
        await asyncio.gather(first, training, late)

    asyncio.run(main(True))
    assert order == ["a+", "a-", "train+", "train-", "b+", "b-"]
    order.clear()
    asyncio.run(main(False))
    assert order.index("train+") < order.index("a-")  # no gate: everything overlaps


def test_gpu_declarations_follow_the_config():
    model = resource_model(node_cores=(0, 1), gpus=8, servers=3, serve_gpus=1, train_gpus=2)
    assert [s.num_gpus for s in model.servers] == [1, 1, 1] and model.trainer.num_gpus == 2
    assert model.cpu_bind(0) is None


def test_serving_dtype_is_bf16_only_where_native():
    native = CpuInfo("x", (0,), frozenset({"avx2", "avx512_bf16"}))
    amx = CpuInfo("x", (0,), frozenset({"amx_bf16"}))
    avx2 = CpuInfo("AMD EPYC", (0, 1), frozenset({"avx2", "fma"}))
    assert serving_dtype(gpu=False, cpu=native) == "bfloat16"
    assert serving_dtype(gpu=False, cpu=amx) == "bfloat16"
    assert serving_dtype(gpu=False, cpu=avx2) == "float32"


# ---------------------------------------------------------------- engine liveness and feeding

METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="0",model_name="m-lora"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:generation_tokens_total{engine="0",model_name="m"} 1200.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 300.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
"""


def test_parse_metrics_sums_over_models_and_ignores_the_rest():
    s = parse_metrics(METRICS, at=5.0)
    assert (s.running, s.waiting, s.generation_tokens, s.prompt_tokens, s.at) == (5, 7, 1200, 300, 5.0)
    assert s.busy and s.tokens == 1500


def _s(at, tokens, running=1, waiting=0):
    return EngineSample(at, running, waiting, tokens, 0)


POLICY = WatchPolicy(poll_s=1, dead_after=3, stall_s=10)


def test_busy_engine_whose_tokens_move_is_alive_however_long_it_takes():
    samples = [_s(t, t * 10) for t in range(0, 1000)]
    assert assess(samples, POLICY, now=1000) is Health.OK


def test_busy_engine_with_frozen_counters_is_stalled_after_stall_s():
    samples = [_s(0, 50)] + [_s(t, 100) for t in range(1, 12)]
    assert assess(samples[:8], POLICY, now=7) is Health.OK
    assert assess(samples, POLICY, now=11) is Health.STALLED


def test_idle_engine_is_never_stalled_and_failed_polls_mean_dead():
    idle = [_s(t, 100, running=0) for t in range(30)]
    assert assess(idle, POLICY, now=30) is Health.OK
    assert assess(idle + [None, None], POLICY, now=32) is Health.OK
    assert assess(idle + [None, None, None], POLICY, now=33) is Health.DEAD
    assert assess([None, _s(1, 1), None, None], POLICY, now=4) is Health.OK


def test_concurrency_follows_the_engine_queue():
    assert next_limit(64, 64, _s(0, 0, running=8, waiting=56), low=1, high=64) == 12  # flooded: cut
    assert next_limit(16, 16, _s(0, 0, running=16, waiting=0), low=1, high=64) == 18  # starved: grow
    assert next_limit(16, 10, _s(0, 0, running=10, waiting=0), low=1, high=64) == 16  # not all used
    assert next_limit(64, 64, _s(0, 0, running=16, waiting=0), low=1, high=64) == 64  # at the cap
    assert next_limit(16, 16, None, low=1, high=64) == 16  # no sample: keep
    # a queue of a third of what runs is cut too: cells waiting there are lost to other replicas
    assert next_limit(256, 256, _s(0, 0, running=192, waiting=64), low=1, high=256) == 240
    assert next_limit(256, 256, _s(0, 0, running=240, waiting=16), low=1, high=256) == 256  # short queue: keep


def test_drivers_sharing_an_engine_cut_to_their_share_and_give_back_what_they_cannot_send():
    # seven drivers of 256 on an engine that runs 1024: 768 wait; each keeps its share, 256 x 4/7
    limit = next_limit(256, 256, _s(0, 0, running=1024, waiting=768), low=1, high=256)
    assert limit == 183 and 7 * limit - 1024 <= 1024 // 4 + 7  # a quarter waits, give or take rounding
    assert surplus_leases(limit, in_flight=150, unsent=40) == 7  # room for 33 more, 40 held
    assert surplus_leases(limit, in_flight=256, unsent=10) == 10  # over the limit: none to send
    assert surplus_leases(limit, in_flight=100, unsent=10) == 0


# ---------------------------------------------------------------- sweep decisions

def test_generation_retries_only_what_can_succeed():
    assert after_generation(GenerationSummary("r", missing=0, rows=64), 1).action == "next"
    retry = after_generation(GenerationSummary("r", GenerationStats(errors=["c (t, u): engine gone"]), missing=3), 1)
    assert retry.action == "retry" and "3 cells missing" in retry.message and "engine gone" in retry.message
    refused = after_generation(GenerationSummary("r", GenerationStats(client_failed=2), missing=2), 1)
    assert refused.action == "missing" and refused.missing == 2
    assert after_generation(GenerationSummary("r", missing=3), 3).action == "missing"
    crashed = after_generation(GenerationSummary("r", error="worker died"), 1)
    assert crashed.action == "retry" and "restart" not in crashed.message  # nothing restarted
    lost = after_generation(GenerationSummary("r", error="worker died"), 3)
    assert lost.action == "missing" and lost.missing is None  # how many cells: not known


def test_judge_give_ups_are_judged_again_once_then_counted():
    gave_up = JudgingSummary("r", "local", stats=JudgeStats(fanout=FanoutCounters(fatal=4)))
    assert after_judging(gave_up, 1).action == "retry"
    assert after_judging(gave_up, 2).action == "missing" and after_judging(gave_up, 2).missing == 4
    assert after_judging(JudgingSummary("r", "local"), 1).action == "next"
    assert after_judging(JudgingSummary("r", "x", error="boom"), 1).action == "missing"


def test_target_complete_needs_every_cell_and_every_judge():
    ok = dict(missing_cells=[], episodes=64, verdicts_per_judge={"a": 64, "b": 64}, expected=64, judges=["a", "b"])
    assert target_complete(**ok)
    assert not target_complete(**{**ok, "verdicts_per_judge": {"a": 64}})
    assert not target_complete(**{**ok, "missing_cells": ["c1"]})
    assert not target_complete(**{**ok, "episodes": 63})


def test_run_history_keeps_every_attempt():
    first = with_history(None, {"stages": {"training": {"wall_s": 60}}, "counts": {"requeued": 0}})
    assert first["attempt"] == 1 and first["attempts"][0]["stages"]["training"]["wall_s"] == 60
    second = with_history(first, {"stages": {"training": {"wall_s": 0}}})
    assert second["attempt"] == 2 and second["stages"]["training"]["wall_s"] == 0
    assert second["attempts"][0] == first["attempts"][0]
    legacy = with_history({"stages": {"x": 1}, "total_wall_s": 5}, {"stages": {}})
    assert legacy["attempts"][0]["total_wall_s"] == 5 and legacy["attempt"] == 2


def test_progress_line_shows_done_rate_and_eta():
    line = progress_line("tiny+lora@s0", "cells", Snapshot(16, 64, 800, "requeued 2"), 20.0)
    assert line == "[tiny+lora@s0] cells 16/64 (25%) · 40.0 tok/s · ETA 0:01:00 · requeued 2"
    assert "took 0:00:20" in progress_line("t", "verdicts", Snapshot(64, 64), 20.0)
