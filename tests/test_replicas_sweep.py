"""Server replicas on a Ray head with fake GPUs, served by the simulated engine: replicas started
as GPUs free up, adapters on every replica (started or restarted later), one shared cell queue."""

import json
import time
from pathlib import Path

import polars as pl
import pytest
from sweep_jobs import finish, kill_when_generating, start_sweep

from jobs.submit import LocalHead
from jobs.sweep_config import load_config, make_plan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def gpu_head():
    """A head of this module's own with three GPUs it does not have (the engine is simulated), and
    CPUs declared as a GPU node's would be: a server or trainer declares one besides its GPU."""
    head = LocalHead(num_cpus=6, extra=["--num-gpus=3"]).start()
    yield head
    head.stop()
    assert head.processes() == [], "Ray processes of this test's head were left behind"


def _config(tmp_path, name: str, extra: str = "", time_scale: float = 0.05) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"name: {name}\nbench: builtin\nsplit: eval\nconditions: [baseline, curated]\n"
        "models:\n"
        "  - label: q08\n    base: Qwen/Qwen3.5-0.8B\n    size: 0.8B\n"
        "    generation: {max_tokens: 512, concurrency: 8}\n"
        f"    adapters: [{{recipe: {ROOT}/eval_configs/recipes/v1.yaml, seeds: [0]}}]\n"
        f"{extra}"
        "judges:\n  - {label: det, mode: deterministic}\n"
        "statistics: {bootstrap: 200}\n"
        "resources: {train_gpus: 1, serve_gpus: 1}\n"
        f"engine: {{kind: sim, gpu: h100, time_scale: {time_scale}}}\n")
    return config


def test_replicas_follow_the_gpus_and_stop_when_their_work_is_done(gpu_head, tmp_path):
    config = _config(tmp_path, "grow")
    output = finish(start_sweep(gpu_head, str(config), "--out", str(tmp_path)))
    run = tmp_path / "grow"
    plan = make_plan(load_config(config))
    episodes = pl.read_parquet(run / "episodes.parquet")
    assert len(episodes) == plan.cells == episodes["cell_id"].n_unique()
    summary = json.loads((run / "run.json").read_text())
    assert summary["missing"] == [] and summary["failures"] == [] and summary["counts"]["regenerated"] == 0
    # 3 GPUs, one training: two replicas at once (the training holds the third GPU), a third when
    # the training ends; once both targets are generated the server is stopped.
    assert summary["serving"]["replicas"] == {"q08": 3}
    log = output[output.index("plan: 2 targets"):]
    # replica 2 waits for the training's GPU: it starts after the generation of the base has
    # begun on the first two (whose drivers' progress lines name shards a1r0 and a1r1)
    assert log.index("starting replica 1") < log.index("starting replica 2")
    assert "server q08: no work left, 3 replica(s) stopped" in log
    replicas = summary["stages"]["generation"]["replicas"]
    for target in ("q08", "q08+v1@s0"):
        shards = {s: r["cells"] for s, r in replicas[target].items()}
        assert sum(shards.values()) == plan.tasks * 2 and sum(1 for n in shards.values() if n) >= 2, shards
    registered = json.loads((run / "servers" / "q08.adapters.json").read_text())
    assert list(registered) == ["v1@s0"]
    # every verdict is unscored (the simulated engine's replies answer nothing), and the report still renders
    assert (run / "report.html").is_file()


def test_every_server_gets_its_first_replica_before_any_gets_a_second(gpu_head, tmp_path):
    # 3 GPUs, two bases, one training: each base one replica and the training one GPU; the
    # first base declared must not take the GPU the second base's first replica needs.
    config = _config(tmp_path, "two", extra="  - label: q2\n    base: Qwen/Qwen3.5-2B\n    size: 2B\n"
                     "    generation: {max_tokens: 512, concurrency: 8}\n")
    output = finish(start_sweep(gpu_head, str(config), "--out", str(tmp_path)))
    log = output[output.index("plan: 3 targets"):]
    first_q2 = log.index("server q2: starting replica 0")
    assert log.index("server q08: starting replica 0") < first_q2
    if "server q08: starting replica 1" in log:  # a second q08 replica comes after q2's first
        assert first_q2 < log.index("server q08: starting replica 1")
    summary = json.loads((tmp_path / "two" / "run.json").read_text())
    assert summary["missing"] == [] and summary["failures"] == []


def test_a_replica_killed_mid_run_hands_its_cells_to_the_other_and_none_is_lost_or_doubled(gpu_head, tmp_path):
    # Two fixed replicas, base only, slow enough to kill one mid-run.
    config = _config(tmp_path, "kill", extra="    replicas: 2\n    include_base: true\n", time_scale=0.5)
    config.write_text(config.read_text().replace(
        f"    adapters: [{{recipe: {ROOT}/eval_configs/recipes/v1.yaml, seeds: [0]}}]\n", ""))
    proc = start_sweep(gpu_head, str(config), "--out", str(tmp_path))
    killed_at = kill_when_generating(gpu_head, proc, tmp_path / "kill" / "runs" / "q08", "server:kill:q08:1", 8)
    finish(proc)
    episodes = pl.read_parquet(tmp_path / "kill" / "episodes.parquet")
    plan = make_plan(load_config(config))
    assert killed_at < len(episodes) == plan.cells == episodes["cell_id"].n_unique()
    summary = json.loads((tmp_path / "kill" / "run.json").read_text())
    assert summary["missing"] == [] and summary["failures"] == []
    assert summary["counts"]["requeued"] >= 1 and summary["counts"]["regenerated"] == 0
    assert summary["counts"]["failed"] == 0
    shards = summary["stages"]["generation"]["replicas"]["q08"]
    assert set(shards) == {"a1r0", "a1r1"} and sum(s["cells"] for s in shards.values()) == plan.cells
    assert shards["a1r0"]["cells"] > shards["a1r1"]["cells"]  # the survivor took the killed one's share


def test_an_adapter_registered_before_a_replica_restarts_is_served_by_it(gpu_head, tmp_path):
    import httpx
    import ray

    from harness.client import server_headers
    from jobs.sweep import ServerActor
    from jobs.sweep_config import EngineSpec
    from train.recipe import load_recipe
    from train.sim_training import sim_train_one

    adapter = tmp_path / "v1-s0"
    sim_train_one(load_recipe(ROOT / "eval_configs" / "recipes" / "v1.yaml"), 0, adapter, model="Qwen/Qwen3.5-0.8B",
                  size="0.8B", gpu="h100", time_scale=0.001)
    listed = tmp_path / "q08.adapters.json"
    listed.write_text(json.dumps({"v1@s0": str(adapter)}))  # as the sweep registers it
    ray.init(address=gpu_head.gcs_address, namespace="skillsweep-test", log_to_driver=False)
    try:
        actor = ServerActor.options(num_gpus=1, num_cpus=0).remote(
            "Qwen/Qwen3.5-0.8B", "q08", 4096, 1, [16], None, str(listed), EngineSpec(kind="sim", time_scale=0.01),
            "0.8B")
        first = ray.get(actor.info.remote(), timeout=120)
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 120
        while True:  # ray.kill is asynchronous: until it lands, the old process may still answer
            assert time.monotonic() < deadline, "the replica was not restarted"
            try:
                second = ray.get(actor.info.remote(), timeout=60)
            except ray.exceptions.RayActorError:
                time.sleep(0.5)
                continue
            if second["actor_pid"] != first["actor_pid"]:
                break
            time.sleep(0.5)
        served = first["adapters"]["v1@s0"]
        assert second["actor_pid"] != first["actor_pid"] and second["adapters"] == first["adapters"]
        reply = httpx.post(second["api_base"] + "/chat/completions", headers=server_headers(), timeout=30,
                           json={"model": served, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
        assert reply.status_code == 200 and reply.json()["model"] == served
        ray.get(actor.stop.remote(), timeout=60)
        ray.kill(actor, no_restart=True)
    finally:
        ray.shutdown()
