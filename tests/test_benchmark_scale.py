"""The paper-scale benchmark's parts that need no cluster: the derived config, its plan and
estimate, and the measured makespan read from a run.json; and the simulated two-node cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from jobs.benchmark_scale import (
    PAPER,
    SimulatedCluster,
    _ratio_line,
    cluster_status,
    derive_config,
    estimate_figures,
    load_plan,
    measured_makespan,
    write_config,
)
from jobs.estimate import parse_cluster

SKILLMIX = Path(__file__).resolve().parents[2] / "shared" / "reference" / "skillmix"


@pytest.fixture
def paper_without_tasks(tmp_path) -> Path:
    """paper.yaml beside a copy of the study's folder that lacks tasks_eval.json (as on some machines)."""
    (tmp_path / "eval_configs").mkdir()
    shutil.copytree(PAPER.parent / "recipes", tmp_path / "eval_configs" / "recipes")
    text = PAPER.read_text().replace("../../shared/reference/skillmix", "../partial-skillmix")
    (tmp_path / "eval_configs" / "paper.yaml").write_text(text)
    (tmp_path / "partial-skillmix").mkdir()
    (tmp_path / "partial-skillmix" / "README.md").write_text("tasks_eval.json is not here\n")
    return tmp_path / "eval_configs" / "paper.yaml"


def test_derived_config_keeps_the_served_models_and_drops_what_is_api(paper_without_tasks, tmp_path):
    config, notes = derive_config(paper_without_tasks, tmp_path / "work", time_scale=0.5, policy="pool")
    assert [m["label"] for m in config["models"]] == ["Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B"]
    assert [len(m["adapters"]) for m in config["models"]] == [6, 1, 1]
    assert all(Path(a["recipe"]).is_absolute() for m in config["models"] for a in m["adapters"])
    assert config["judges"] == [{"label": "det", "mode": "deterministic"}]
    assert config["statistics"]["judge"] == "det" and "judge_b" not in config["statistics"]
    assert "corpus" not in config and config["engine"] == {"kind": "sim", "gpu": "h100", "time_scale": 0.5}
    assert "replicas" not in config["resources"]
    assert len(notes["dropped_models"]) == 1 and len(notes["dropped_judges"]) == 3
    # No tasks_eval.json: the synthetic bench of the study's shape.
    assert notes["bench"].startswith("synthetic") and (Path(config["bench"]) / "tasks.jsonl").is_file()
    one, _ = derive_config(paper_without_tasks, tmp_path / "work", time_scale=0.5, policy="one-per-base")
    assert one["resources"]["replicas"] == 1 and one["name"] == "paper-sim-one-per-base"
    written = yaml.safe_load(write_config(one, tmp_path / "work").read_text())
    assert written == one


def test_plan_and_estimate_of_the_derived_config(paper_without_tasks, tmp_path):
    config, _ = derive_config(paper_without_tasks, tmp_path / "work", time_scale=0.5, policy="one-per-base")
    plan = load_plan(config)  # loads whether or not the sweep config knows engine / replicas
    figures = estimate_figures(plan, parse_cluster("2x4xH100"))
    counts = figures["counts"]
    assert (counts["targets"], counts["cells"], counts["trainings"], counts["servers"]) == (13, 5200, 10, 5)
    bound = figures["lower_bound"]
    assert bound["seconds"] == max(bound["work_s"], bound["critical_path_s"]) > 0
    assert all(m >= bound["seconds"] for m in figures["estimate_makespan_s"].values())
    assert figures["left_out"] == []  # nothing API left in the plan


@pytest.mark.skipif(not (SKILLMIX / "tasks_eval.json").is_file(), reason="the study's files are not here")
def test_the_studys_bench_is_used_when_it_is_here(tmp_path):
    config, notes = derive_config(PAPER, tmp_path, time_scale=1.0, policy="pool")
    assert Path(config["bench"]) == SKILLMIX.resolve() and notes["bench"].startswith("the study's")


def test_measured_makespan_is_the_pipelines_span_in_simulated_seconds():
    run = {"total_wall_s": 130.0, "stages": {"pipelines_wall_s": 100.0, "training": {"wall_s": 40.0}},
           "counts": {}, "missing": [], "failures": []}
    measured = measured_makespan(run, 0.5)
    assert measured["makespan_s"] == 200.0 and measured["total_s"] == 260.0
    assert measured["stages_wall_s"] == {"training": 40.0}
    assert _ratio_line({"pool": 0.8712, "one-per-base": 0.6}) == \
        "efficiency pool 0.87 (target ≥ 0.85); one-per-base 0.60"
    assert _ratio_line({}).startswith("efficiency pool n/a")


@pytest.mark.ray
def test_simulated_cluster_has_two_nodes_of_four_gpus_and_leaves_nothing():
    cluster = SimulatedCluster(nodes=2, gpus_per_node=4, cpus_per_node=2).start()
    try:
        assert cluster.head is not None
        status = cluster_status(cluster.head.gcs_address)
        assert "0.0/8.0 GPU" in status and "0.0/4.0 CPU" in status
    finally:
        head, workers = cluster.head, list(cluster.workers)
        cluster.stop()
    assert head is not None and head.processes() == [] and all(w.processes() == [] for w in workers)
