"""The paper-scale sweep on a simulated GPU cluster: how close the sweep comes to the lower bound.

The study's sweep (``eval_configs/paper.yaml``) as it would run on two nodes of four H100s,
here on one CPU machine: a two-node Ray cluster on 127.0.0.1 whose nodes declare four GPUs each
(fake GPUs: Ray only counts them), the simulated engine (:mod:`serve.sim_engine`) for every
server and the simulated training (:mod:`train.sim_training`) for every adapter, all at
``time_scale`` (wall seconds per simulated second). Steps:

1. Derive a config from paper.yaml: the served models with their adapters and recipes; API
   models, API judges and the corpus tracing (an API teacher) dropped; a deterministic judge;
   the study's bench when its ``tasks_eval.json`` is here, else a synthetic bench of its shape
   (:mod:`jobs.synthetic_bench`); ``engine: {kind: sim, gpu: h100, time_scale: S}``. One config
   per placement policy: ``pool`` (server replicas from free GPUs, the default) and
   ``one-per-base`` (``resources.replicas: 1``).
2. The estimate for the same plan (:mod:`jobs.estimate`, cluster ``2x4xH100``): lower bound and
   fluid makespan under each policy.
3. Each config as a Ray job on the simulated cluster (:func:`run_sweep`); the measured makespan
   is the sweep's ``stages.pipelines_wall_s`` / time scale (see :func:`measured_makespan`).
4. ``efficiency = lower bound / measured makespan`` per policy, written with everything else to
   results/benchmarks/scale.json.

    python -m jobs.benchmark_scale [--time-scale 2.0] [--policies pool,one-per-base] [--estimate-only]

The default scale is 2.0 (two wall seconds per simulated second): a run takes about twice its
simulated makespan, 8 to 11 minutes per policy. At 1.0 this 2-core machine, not the simulated GPUs,
set the pace: the generation drivers (litellm, a fresh Ray worker importing it for each) used
both cores through the generation phase (README, "Benchmarks", has the figures at both scales).
Nothing simulated depends on the scale; only the harness's own CPU time shrinks against it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from harness.bench import load_bench
from harness.yaml_models import beside
from jobs.benchmark_generation import write_benchmark
from jobs.estimate import Cluster, estimate, lower_bound, mean_prompt_tokens, parse_cluster, workload
from jobs.submit import LocalHead, _ray_cli, submit_sweep, use_token_auth
from jobs.sweep_config import Plan, load_config, make_plan
from jobs.synthetic_bench import write_paper_shaped_bench
from serve.sim_model import TrainingModel

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "eval_configs" / "paper.yaml"
OUT = Path("results/benchmarks/scale.json")
WORK = Path("results/scale")  # derived configs, the synthetic bench, the sweeps' runs (untracked)
CLUSTER = "2x4xH100"
POLICIES = ("pool", "one-per-base")
TARGET_EFFICIENCY = 0.85
TIME_SCALE = 2.0  # see the module docstring: at 1.0 the 2-core machine's CPU sets the pace
REPORT_BOOTSTRAP = 1000
# Fields the lead's sweep config adds (engine, resources.replicas); the estimate reads neither,
# so the plan is made from the derived config without them (loads with or without that change).
SIM_ONLY_FIELDS = ("engine",)
SIM_ONLY_RESOURCES = ("replicas",)


# ------------------------------------------------------------------ the derived config


def derive_config(paper: Path, work: Path, *, time_scale: float, policy: str, gpu: str = "h100") -> tuple[dict, dict]:
    """The simulated sweep's config from the study's, and notes on what was changed and why.

    Every path in the result is absolute, so the file can be written anywhere."""
    raw = yaml.safe_load(paper.read_text())
    notes: dict = {"source": str(paper), "dropped_models": [], "dropped_judges": [], "dropped": []}
    models = []
    for model in raw["models"]:
        if model.get("api"):
            notes["dropped_models"].append(f"{model['label']} (API model {model['api']}: no GPU work to simulate)")
            continue
        model = dict(model)
        base = str(model["base"])
        if not base.startswith("local:") and Path(beside(paper, base)).exists():
            model["base"] = beside(paper, base)  # a checkpoint folder beside the config
        model["adapters"] = [{**a, "recipe": beside(paper, a["recipe"])} for a in model.get("adapters", [])]
        models.append(model)
    judges = []
    for judge in raw["judges"]:
        if judge.get("mode") != "deterministic" and not judge.get("serve"):
            notes["dropped_judges"].append(f"{judge['label']} ({judge['mode']} judge on API model {judge.get('model')})")
            continue
        judges.append(dict(judge))
    judges.append({"label": "det", "mode": "deterministic"})
    labels = {j["label"] for j in judges}
    statistics = dict(raw.get("statistics") or {})
    for key in ("judge", "judge_b"):
        if statistics.get(key) and statistics[key] not in labels:
            notes["dropped"].append(f"statistics.{key}: {statistics[key]} (a dropped judge)")
            statistics.pop(key)
    statistics.setdefault("judge", "det")
    if statistics.get("bootstrap", 10_000) > REPORT_BOOTSTRAP:
        notes["dropped"].append(f"statistics.bootstrap {statistics.get('bootstrap', 10_000)} → {REPORT_BOOTSTRAP} "
                                "(the report is outside the measured span; fewer resamples only end the run sooner)")
        statistics["bootstrap"] = REPORT_BOOTSTRAP
    corpus = raw.get("corpus")
    if corpus:
        notes["dropped"].append(
            f"corpus (traced by teacher {corpus.get('teacher')}, judged by {corpus.get('judge')}: API models; a "
            "simulated training does not read its corpus, it is sized by TrainingModel.corpus_rows)")
    probes = raw.get("probes")
    if probes and probes.get("judge") and probes["judge"] not in labels:
        notes["dropped"].append(f"probes (judged by {probes['judge']}, a dropped judge)")
        probes = None
    spec = raw.get("bench", "builtin")
    bench = Path(beside(paper, spec))
    if spec == "builtin":
        notes["bench"] = "builtin (as the source config has it)"
    elif (bench / "tasks_eval.json").is_file() or (bench / "tasks.jsonl").is_file():
        notes["bench"] = f"the study's files: {bench}"
    else:
        bench = write_paper_shaped_bench(work / "paper-shaped-bench")
        notes["bench"] = (f"synthetic, of the study's shape (jobs.synthetic_bench; 200 eval tasks, 40 skills): {bench}; "
                          f"the study's {raw.get('bench')} has no tasks_eval.json here")
    resources = dict(raw.get("resources") or {})
    if policy == "one-per-base":
        resources["replicas"] = 1
    elif policy != "pool":
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    config = {
        "name": f"{raw['name']}-sim-{policy}",
        "bench": spec if spec == "builtin" else str(bench.resolve()),
        "split": raw.get("split", "eval"),
        "conditions": raw.get("conditions", ["baseline", "curated"]),
        "models": models,
        "judges": judges,
        "statistics": statistics,
        "resources": resources,
        "engine": {"kind": "sim", "gpu": gpu, "time_scale": time_scale},
    }
    if probes:
        config["probes"] = probes
    return config, notes


def write_config(config: dict, work: Path) -> Path:
    """The derived config as YAML in ``work``; returns its path."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{config['name']}.yaml"
    header = ("# Derived by jobs/benchmark_scale.py from eval_configs/paper.yaml: a simulated sweep "
              "(serve/sim_engine.py, train/sim_training.py). Regenerated on every run.\n")
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, width=120))
    return path


def load_plan(config: dict) -> Plan:
    """The plan of a derived config, checked by the sweep's own loader (without the simulated
    engine's fields, which it may not know yet and the plan does not depend on)."""
    plain = {k: v for k, v in config.items() if k not in SIM_ONLY_FIELDS}
    plain["resources"] = {k: v for k, v in config.get("resources", {}).items() if k not in SIM_ONLY_RESOURCES}
    with tempfile.TemporaryDirectory(prefix="scale-plan-") as tmp:
        path = Path(tmp) / "plan.yaml"
        path.write_text(yaml.safe_dump(plain, sort_keys=False))
        return make_plan(load_config(path))


# ------------------------------------------------------------------ the estimate


def estimate_figures(plan: Plan, cluster: Cluster, training: TrainingModel = TrainingModel()) -> dict:
    """Plan counts, the lower bound's parts and the estimate's makespan under both policies."""
    bench = load_bench(plan.config.bench)
    est = estimate(plan, cluster, training, bench)
    prompt = mean_prompt_tokens(bench, plan.config.split, plan.config.conditions)
    work = workload(plan, cluster.gpu, prompt, training)
    bound = lower_bound(work, cluster.gpus)
    assert abs(bound.seconds - est.bound.seconds) < 1e-6, "the same plan gives the same bound"
    return {
        "counts": {"targets": len(plan.targets), "cells": plan.cells, "trainings": len(plan.trainings),
                   "servers": len(work.servers), "tasks": plan.tasks, "conditions": len(plan.config.conditions),
                   "judges": [j.label for j in plan.config.judges], "mean_prompt_tokens": round(prompt, 1)},
        "lower_bound": {"seconds": round(bound.seconds, 1), "work_s": round(bound.work_s, 1),
                        "critical_path_s": round(bound.critical_path_s, 1),
                        "definition": "max(total GPU work / GPUs, critical path through training) (jobs.estimate)"},
        "estimate_makespan_s": {"pool": round(est.makespan_s, 1), "one-per-base": round(est.one_per_base_s, 1)},
        "estimate_max_replicas_pool": est.schedule.max_replicas,
        "left_out": list(est.left_out),
    }


# ------------------------------------------------------------------ a simulated two-node cluster


class SimulatedCluster:
    """``nodes`` Ray nodes on 127.0.0.1 with ``gpus_per_node`` fake GPUs each (Ray counts them;
    nothing uses a device): a :class:`jobs.submit.LocalHead` and ``nodes - 1`` worker nodes.

    CPUs are declared, not real: each node declares ``cpus_per_node`` so that CPU declarations
    (1 per server and trainer, 0.05 per driver) never bind before the GPUs do, as on a GPU node."""

    def __init__(self, nodes: int = 2, gpus_per_node: int = 4, cpus_per_node: int = 8,
                 object_store_bytes: int = 512 * 2**20):
        self.nodes, self.gpus_per_node, self.cpus_per_node = nodes, gpus_per_node, cpus_per_node
        self.object_store_bytes = object_store_bytes
        self.head: LocalHead | None = None
        self.workers: list[LocalHead] = []

    @property
    def address(self) -> str:
        assert self.head is not None, "started"
        return self.head.address

    def start(self, timeout_s: float = 180.0) -> SimulatedCluster:
        use_token_auth()
        self.head = LocalHead(num_cpus=self.cpus_per_node,
                              extra=[f"--num-gpus={self.gpus_per_node}",
                                     f"--object-store-memory={self.object_store_bytes}"]).start(timeout_s)
        try:
            for _ in range(self.nodes - 1):
                self.workers.append(LocalHead(num_cpus=self.cpus_per_node, join=self.head.gcs_address,
                                              extra=[f"--num-gpus={self.gpus_per_node}",
                                                     f"--object-store-memory={self.object_store_bytes}"]).start())
            self._wait_for_gpus(self.nodes * self.gpus_per_node, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_gpus(self, gpus: int, timeout_s: float) -> None:
        assert self.head is not None, "started"
        deadline = time.monotonic() + timeout_s
        status = ""
        while time.monotonic() < deadline:
            for worker in self.workers:
                if not worker.alive():
                    raise RuntimeError(f"a Ray worker node did not start:\n{worker.log_tail()}")
            status = cluster_status(self.head.gcs_address)
            if f"/{gpus:.1f} GPU" in status:
                return
            time.sleep(1)
        raise RuntimeError(f"the simulated cluster did not reach {gpus} GPUs within {timeout_s:.0f} s:\n{status[-2000:]}")

    def describe(self) -> dict:
        return {"nodes": self.nodes, "gpus_per_node": self.gpus_per_node, "cpus_per_node": self.cpus_per_node,
                "how": "ray start --head --num-gpus N and ray start --address HEAD --num-gpus N on 127.0.0.1, "
                       "each with its own temp dir and ports (jobs.submit.LocalHead, as head and as joining node)"}

    def stop(self) -> None:
        for worker in reversed(self.workers):
            worker.stop()
        self.workers = []
        if self.head is not None:
            self.head.stop()
            self.head = None

    def __enter__(self) -> SimulatedCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def cluster_status(gcs_address: str) -> str:
    """``ray status`` of the cluster at ``gcs_address`` (its resources line says ``0.0/8.0 GPU``)."""
    result = subprocess.run([_ray_cli(), "status", f"--address={gcs_address}"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "RAY_AUTH_MODE": "token"})
    return result.stdout + result.stderr


# ------------------------------------------------------------------ running and measuring


class SweepFailed(RuntimeError):
    """The sweep's Ray job left no run.json; the message has the end of its log."""


def run_sweep(config_path: Path, out: Path, address: str, echo: Callable[[str], None] = print) -> dict:
    """Submit ``python -m jobs.sweep CONFIG --out OUT`` as a Ray job to the cluster at ``address``
    (its dashboard URL), follow its log, and return the run.json it wrote (``OUT/<name>/run.json``).
    A job that failed but wrote run.json returns it (its ``failures`` say why); one that wrote
    none raises :class:`SweepFailed`."""
    name = yaml.safe_load(Path(config_path).read_text())["name"]
    lines: list[str] = []

    def keep(text: str) -> None:
        lines.append(text)
        echo(text)

    rc = submit_sweep(Path(config_path), run_name=None, resume=False, out=Path(out), address=address, echo=keep)
    run_json = Path(out) / name / "run.json"
    if not run_json.is_file():
        tail = "\n".join("\n".join(lines).splitlines()[-40:])
        raise SweepFailed(f"the sweep job for {config_path} exited {rc} and wrote no {run_json}:\n{tail}")
    summary = json.loads(run_json.read_text())
    summary.setdefault("job_exit_code", rc)
    return summary


MEASURED_SPAN = ("stages.pipelines_wall_s: from the moment the sweep driver has queued its trainings and asked Ray "
                 "for its server actors to the end of the last target's judging (server start-ups, trainings, "
                 "adapter loads, generation and judging of every cell); not included: reading the config and "
                 "planning before it, merging, statistics, report and stopping the servers after it, and the Ray "
                 "job's submission. Real overheads inside the span (Ray scheduling actors and workers, process "
                 "starts, HTTP, the deterministic judge's CPU time) are divided by the time scale like everything "
                 "else, so they count as simulated time.")


def measured_makespan(run: dict, time_scale: float) -> dict:
    """The measured makespan in simulated seconds from a sweep's run.json."""
    stages = run.get("stages", {})
    pipelines = stages.get("pipelines_wall_s")
    return {
        "makespan_s": round(pipelines / time_scale, 1) if pipelines is not None else None,
        "pipelines_wall_s": pipelines,
        "total_wall_s": run.get("total_wall_s"),
        "total_s": round(run["total_wall_s"] / time_scale, 1) if run.get("total_wall_s") is not None else None,
        "stages_wall_s": {k: v.get("wall_s") for k, v in stages.items() if isinstance(v, dict)},
        "counts": run.get("counts"), "missing": run.get("missing"), "failures": run.get("failures"),
        "job_exit_code": run.get("job_exit_code"),
    }


def lscpu_model_name() -> str | None:
    """``Model name`` as ``lscpu`` prints it (None where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), None)


def _ratio_line(efficiency: dict) -> str:
    def fmt(policy: str) -> str:
        value = efficiency.get(policy)
        return f"{value:.2f}" if value is not None else "n/a"

    return f"efficiency pool {fmt('pool')} (target ≥ {TARGET_EFFICIENCY}); one-per-base {fmt('one-per-base')}"


def main(argv: list[str] | None = None) -> int:
    """Derive the simulated paper sweep, estimate it, run it under both policies on a simulated
    2x4 GPU Ray cluster, and write the efficiency figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", type=Path, default=PAPER, help="the study's sweep config")
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE, help="wall seconds per simulated second")
    parser.add_argument("--cluster", default=CLUSTER, help="NODESxGPUSxCLASS, e.g. 2x4xH100")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--work", type=Path, default=WORK, help="derived configs, bench and runs (untracked)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--estimate-only", action="store_true", help="derive, plan and estimate; run nothing")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error(f"--time-scale must be > 0, got {args.time_scale}")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    cluster = parse_cluster(args.cluster)
    work = args.work.resolve()

    configs: dict[str, tuple[dict, Path]] = {}
    notes: dict = {}
    for policy in policies:
        config, notes = derive_config(args.paper.resolve(), work, time_scale=args.time_scale, policy=policy,
                                      gpu=cluster.gpu)
        configs[policy] = (config, write_config(config, work))
    plan = load_plan(next(iter(configs.values()))[0])  # the policies share one plan
    figures = estimate_figures(plan, cluster)
    c = figures["counts"]
    print(f"plan: {c['targets']} targets, {c['cells']} cells, {c['trainings']} trainings, {c['servers']} servers; "
          f"lower bound {figures['lower_bound']['seconds']} s; estimate pool {figures['estimate_makespan_s']['pool']}"
          f" s, one-per-base {figures['estimate_makespan_s']['one-per-base']} s on {cluster.describe()}", flush=True)
    result: dict = {
        "date": time.strftime("%Y-%m-%d"), "lscpu_model_name": lscpu_model_name(),
        "cores": len(os.sched_getaffinity(0)), "time_scale": args.time_scale, "cluster": args.cluster,
        "cluster_described": cluster.describe(), "derived_from": notes,
        "configs": {p: str(path) for p, (_, path) in configs.items()}, **figures,
        "measured": {}, "efficiency": {}, "estimate_over_measured": {}, "errors": {},
        "measured_span": MEASURED_SPAN,
        "efficiency_definition": "lower bound / measured makespan (both in simulated seconds)",
    }
    if args.estimate_only:
        print(json.dumps(result, indent=2))
        return 0

    runs = work / "runs" / time.strftime("%Y%m%d-%H%M%S")  # a fresh folder: a sweep refuses an existing run
    with SimulatedCluster(cluster.nodes, cluster.gpus_per_node) as sim:
        result["simulated_cluster"] = sim.describe()
        print(f"simulated cluster up: {cluster.nodes} nodes × {cluster.gpus_per_node} fake GPUs at {sim.address}",
              flush=True)
        for policy, (_, path) in configs.items():
            try:
                run = run_sweep(path, runs, sim.address)
            except Exception as exc:
                result["errors"][policy] = str(exc)[-4000:]
                print(f"{policy}: {type(exc).__name__}: {str(exc)[-2000:]}", flush=True)
                continue
            measured = measured_makespan(run, args.time_scale)
            result["measured"][policy] = measured
            # The report comes after the measured span: paper.yaml's own report refuses to pair
            # pre-SFT (2048 tokens) with post-SFT (1024) cells, which the makespan does not depend on.
            failures = [f for f in measured["failures"] or [] if f.get("stage") != "report"]
            if failures or measured["missing"]:
                result["errors"][policy] = (f"the sweep finished with {len(failures)} failures and "
                                            f"{len(measured['missing'] or [])} missing entries (see measured)")
            if measured["makespan_s"]:
                result["efficiency"][policy] = round(figures["lower_bound"]["seconds"] / measured["makespan_s"], 3)
                result["estimate_over_measured"][policy] = round(
                    figures["estimate_makespan_s"][policy] / measured["makespan_s"], 3)
            print(f"{policy}: measured makespan {measured['makespan_s']} s simulated "
                  f"({measured['pipelines_wall_s']} s wall)", flush=True)
    result["ratio_line"] = _ratio_line(result["efficiency"])
    complete = all(p in result["efficiency"] for p in policies) and not result["errors"]
    out = args.out if complete else work / "scale.partial.json"
    write_benchmark(out, result)
    print(result["ratio_line"], flush=True)
    print(f"wrote {out}" + ("" if complete else " (not every policy was measured cleanly: results/benchmarks untouched)"))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
