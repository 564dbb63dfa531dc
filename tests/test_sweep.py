"""Sweeps on a real local Ray head: `ray job submit`, resume, a killed server actor, plans."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from sweep_jobs import finish, kill_when_generating, run_sweep, start_sweep

from jobs.submit import LocalHead
from jobs.sweep_config import ConfigError, load_config, make_plan

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "reference" / "skillmix"


@pytest.fixture(scope="module")
def ray_head():
    """A head of this module's own (temp dir, ports), stopped by its own process group."""
    head = LocalHead(num_cpus=2).start()
    yield head
    head.stop()
    assert head.processes() == [], "Ray processes of this test's head were left behind"


def _vllm_servers() -> set[int]:
    """This session's vLLM servers (marked SKILLSWEEP_OWNER, through Ray too), never anyone else's."""
    import psutil

    from serve.server import owned_processes

    found = set()
    for pid in owned_processes(os.environ["SKILLSWEEP_OWNER"]):
        try:
            if "vllm.entrypoints.openai.api_server" in " ".join(psutil.Process(pid).cmdline()):
                found.add(pid)
        except psutil.Error:
            continue
    return found


def test_smoke_sweep_via_ray_job_submit_then_resume_does_nothing(ray_head, tmp_path):
    run_sweep(ray_head, "eval_configs/smoke.yaml", "--out", str(tmp_path))
    run = tmp_path / "smoke"
    plan = make_plan(load_config(ROOT / "eval_configs" / "smoke.yaml"))
    episodes = pl.read_parquet(run / "episodes.parquet")
    verdicts = pl.read_parquet(run / "verdicts.parquet")
    assert len(episodes) == plan.cells == episodes["cell_id"].n_unique()
    assert set(episodes["model_label"]) == {t.label for t in plan.targets}
    for judge in ("det", "local"):
        mine = verdicts.filter(pl.col("judge_label") == judge)
        assert set(mine["cell_id"]) == set(episodes["cell_id"])
        assert (mine["passed"].is_not_null() | mine["unscored_reason"].is_not_null()).all()
    for name in ("stats.json", "report.md", "report.html", "run.json", "trajectory.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "run.json").read_text())
    assert summary["missing"] == [] and summary["failures"] == []
    assert summary["stages"]["training"]["trained"] == 1 and summary["stages"]["judging"]["verdicts"] == 2 * plan.cells
    meta = json.loads(next((run / "adapters").glob("*/training_meta.json")).read_text())
    assert meta["loss_curve"][-1] < meta["loss_curve"][0]

    journals = {p: p.stat().st_size for p in (run / "runs").rglob("*.jsonl")}
    again = run_sweep(ray_head, "eval_configs/smoke.yaml", "--out", str(tmp_path), "--resume")
    assert "2 targets already complete" in again.stdout + again.stderr
    resumed = json.loads((run / "run.json").read_text())
    assert "verdicts" not in resumed["stages"]["judging"] and resumed["stages"]["training"] == {"wall_s": 0.0}
    # The first attempt's history survives the resume.
    assert [a["attempt"] for a in resumed["attempts"]] == [1, 2]
    assert resumed["attempts"][0]["stages"] == summary["stages"] and resumed["attempts"][0]["started_at"]
    assert summary["counts"]["regenerated"] == 0 and summary["counts"]["judge_give_ups"] == 0
    assert {p: p.stat().st_size for p in (run / "runs").rglob("*.jsonl")} == journals  # no new rows at all

    refused = run_sweep(ray_head, "eval_configs/smoke.yaml", "--out", str(tmp_path), check=False)
    assert "pass --resume" in refused.stdout + refused.stderr


def test_killed_server_actor_is_restarted_and_every_cell_lands(ray_head, tmp_path):
    config = tmp_path / "kill.yaml"
    config.write_text(
        "name: kill\nbench: builtin\nsplit: eval\nconditions: [baseline, curated]\n"
        "models:\n  - {label: tiny, base: local:tiny-qwen3, generation: {max_tokens: 160, concurrency: 4}}\n"
        "judges:\n  - {label: det, mode: deterministic}\n"
        "statistics: {bootstrap: 200}\nresources: {train_gpus: 0, serve_gpus: 0, kv_cache_gib: 1}\n")
    before = _vllm_servers()  # e.g. the session's own test server
    proc = start_sweep(ray_head, str(config), "--out", str(tmp_path))
    # Ray restarts the killed actor; the sweep must notice and retry.
    killed_at = kill_when_generating(ray_head, proc, tmp_path / "kill" / "runs" / "tiny", "server:kill:tiny:0", 4)
    output = finish(proc, timeout=900)
    episodes = pl.read_parquet(tmp_path / "kill" / "episodes.parquet")
    assert killed_at < len(episodes) == 64 == episodes["cell_id"].n_unique()
    summary = json.loads((tmp_path / "kill" / "run.json").read_text())
    # The in-flight cells were re-queued to the restarted server; none was generated twice.
    assert summary["missing"] == [] and "engine restarted" in output, output[-6000:]
    assert summary["counts"]["requeued"] >= 1 and summary["counts"]["engine_restarts"] >= 1
    assert summary["counts"]["regenerated"] == 0 and summary["counts"]["failed"] == 0  # re-queued, not failed
    deadline = time.monotonic() + 60  # a server told to stop may take a few seconds to exit
    while _vllm_servers() - before and time.monotonic() < deadline:
        time.sleep(1)
    assert not _vllm_servers() - before, "the sweep left vLLM servers behind"


def test_configs_validate_and_errors_name_the_field(tmp_path):
    for name in ("smoke", "demo"):
        assert make_plan(load_config(ROOT / "eval_configs" / f"{name}.yaml")).cells == 128
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels:\n  - {label: a, base: local:tiny-qwen3, api: openai/gpt-5}\n"
                   "judges: [{label: d, mode: deterministic}]\n")
    with pytest.raises(ConfigError, match=r"field 'models.0': Value error, set exactly one of 'base'"):
        load_config(bad)
    bad.write_text("name: x\nmodels: [{label: a, base: m}]\njudges: [{label: j, mode: llm-only}]\n")
    with pytest.raises(ConfigError, match=r"field 'judges.0'.*needs 'model' or 'serve'"):
        load_config(bad)
    bad.write_text("name: x\nmodels: [{label: a, base: m, adapters: [{recipe: nope.yaml}]}]\n"
                   "judges: [{label: d, mode: deterministic}]\n")
    with pytest.raises(ConfigError, match=r"field 'models.0.adapters.0.recipe'"):
        load_config(bad)
    bad.write_text("name: x\nmodels: [{label: a, base: m}]\njudges: [{label: d, mode: deterministic}]\n"
                   "conditions: [baseline, oracle]\n")
    with pytest.raises(ConfigError, match=r"field 'conditions'.*oracle"):
        load_config(bad)


@pytest.mark.skipif(not (SHARED / "tasks_eval.json").is_file(), reason="../shared/reference/skillmix not present")
def test_paper_plan_prints_without_a_gpu():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "eval_configs/paper.yaml", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    plan = json.loads(out)
    assert plan["tasks"] == 200 and plan["cells"] == 14 * 200 * 2 and len(plan["trainings"]) == 10
    assert {s["base"] for s in plan["servers"] if "base" in s} == {"Qwen/Qwen3.5-0.8B", "Qwen/Qwen3.5-2B",
                                                                  "Qwen/Qwen3.5-4B"}
    assert any(t["kind"] == "api" and t["label"] == "haiku-4-5" for t in plan["targets"])
    assert {j["label"] for j in plan["judges"]} == {"opus", "opus-det-mixed", "gpt"}


def test_a_job_writing_into_rays_working_dir_copy_refuses_to_start(tmp_path, monkeypatch, capsys):
    """`ray job submit --working-dir .` runs the job in a copy Ray deletes later: a relative
    --out there would lose the run, so the job refuses before touching Ray and says what to pass."""
    from jobs.sweep import ephemeral_out, main

    copy = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert ephemeral_out(Path("results")) and ephemeral_out(copy / "out")
    assert ephemeral_out(tmp_path / "results") is None and ephemeral_out(Path("/shared/results")) is None
    assert main(["eval_configs/smoke.yaml", "--out", "results"]) == 2
    err = capsys.readouterr().err
    assert "Ray's temporary copy" in err and "--out $PWD/results" in err and str(copy) in err


def test_train_task_reads_back_a_finished_training_as_its_summary(tmp_path):
    """Already trained (same recipe and seed): the task returns the stored TrainingSummary, skipped,
    and the file it read is exactly that summary's as_dict()."""
    from jobs.sweep import train_task
    from train.recipe import load_recipe
    from train.trainer import TrainingSummary

    recipe_path = Path(__file__).resolve().parents[1] / "eval_configs" / "recipes" / "smoke-lora.yaml"
    recipe = load_recipe(recipe_path)
    meta = {"recipe": recipe.model_dump(), "recipe_name": recipe.name, "method": recipe.method, "seed": 2,
            "loss_curve": [1.0, 0.5], "steps": 2, "content_hash": "ab" * 32, "unknown_old_key": 1}
    (tmp_path / "training_meta.json").write_text(json.dumps(meta))
    summary = train_task._function(str(recipe_path), 2, str(tmp_path), "local:tiny-qwen3", "corpus.jsonl", [])
    assert isinstance(summary, TrainingSummary) and summary.skipped and summary.loss_curve == [1.0, 0.5]
    assert summary.method == recipe.method and "skipped" not in summary.as_dict()
    assert {k: summary.as_dict()[k] for k in meta if k != "unknown_old_key"} == {
        k: v for k, v in meta.items() if k != "unknown_old_key"}
