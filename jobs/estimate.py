"""How long a sweep would take on a GPU pool, and how long it must take at least.

:func:`workload` turns a sweep plan into GPU work by the throughput model of
:mod:`serve.sim_model` (the one the simulated engine runs); :func:`simulate` schedules it on a
cluster; :func:`estimate` reports the makespan beside its lower bound

    bound = max(total GPU work / GPUs, the critical path through training)

where the work is every server's first start-up, every training and every cell at the engine's
best throughput (a full batch), and the critical path is, for each target, the earliest its
cells can begin (its server's start-up; its training and the adapter load) plus its own work
spread over the whole pool.

The schedule is a fluid model, stepped every ``dt`` seconds: each server's replicas share the
requests in flight on it (each target keeps at most ``concurrency`` requests in flight per
replica), a replica's output rate is :func:`serve.sim_model.decode_rate` at its batch, and
targets share it by requests in flight. GPUs go first to one server per base (and per served
judge), then to trainings (longest first), then to a server for each trained full checkpoint.
Two policies: ``one-per-base`` (each server one replica: the sweep's design today) and ``pool``
(a GPU left free becomes one more replica of the server with the longest remaining work, when
that work outlasts a start-up). API models (targets and judges) use no GPU and are left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from harness.bench import load_bench
from harness.bench.model import Bench
from harness.errors import SkillsweepError
from harness.prompts import render
from jobs.sweep_config import Plan
from serve.sim_model import (
    GPUS,
    EngineParams,
    TrainingModel,
    decode_rate,
    engine_params,
    expected_output_tokens,
    parse_size,
    prompt_tokens,
)
from train.recipe import load_recipe

Policy = Literal["pool", "one-per-base"]
# A judge reads the rubric and the reply besides the task's prompt (an estimate).
JUDGE_RUBRIC_TOKENS = 400
JUDGE_MAX_TOKENS = 512


class EstimateError(SkillsweepError, ValueError):
    """The plan or the cluster cannot be estimated as given; the message names the value."""


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    gpu: str

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        return f"{self.nodes} node{'s' * (self.nodes > 1)} × {self.gpus_per_node} {self.gpu.upper()}"


def parse_cluster(spec: str) -> Cluster:
    """``8xH100`` (one node of 8) or ``2x4xH100`` (two nodes of 4)."""
    match = re.fullmatch(r"\s*(?:(\d+)\s*[xX×]\s*)?(\d+)\s*[xX×]\s*([A-Za-z][A-Za-z0-9]*)\s*", spec)
    if not match:
        raise EstimateError(f"--cluster {spec!r}: expected GPUSxCLASS or NODESxGPUSxCLASS, e.g. 8xH100 or 2x4xH100")
    nodes, per_node, gpu = int(match[1] or 1), int(match[2]), match[3].lower()
    if gpu not in GPUS:
        raise EstimateError(f"--cluster {spec!r}: unknown GPU class {match[3]!r}; known: {', '.join(GPUS)}")
    if nodes < 1 or per_node < 1:
        raise EstimateError(f"--cluster {spec!r}: nodes and GPUs per node must be at least 1")
    return Cluster(nodes, per_node, gpu)


@dataclass(frozen=True)
class Job:
    """One target's requests on one server (or a judge's requests for one target)."""

    label: str
    server: str
    cells: int
    prompt_tokens: float
    output_tokens: float
    concurrency: int
    lora: bool = False
    training: str | None = None  # waits for this training (an adapter or a full checkpoint)
    after: str | None = None  # waits for this job to finish (a judge waits for the generation)


@dataclass(frozen=True)
class Training:
    label: str
    duration_s: float
    checkpoint_server: str | None = None  # a full checkpoint is served alone


@dataclass(frozen=True)
class Workload:
    servers: dict[str, EngineParams]
    trainings: tuple[Training, ...]
    jobs: tuple[Job, ...]
    left_out: tuple[str, ...] = ()


def mean_prompt_tokens(bench: Bench, split: str, conditions: list[str]) -> float:
    """The average prompt of the plan's cells, counted by the engine's rule."""
    counts = [prompt_tokens(list(render(bench, task, c).messages)) for task in bench.split(split) for c in conditions]
    return sum(counts) / max(1, len(counts))


def _size(model, gpu: str) -> EngineParams:
    try:
        return engine_params(gpu, parse_size(model.size or ""))
    except ValueError as exc:
        raise EstimateError(f"model {model.label!r}, field 'size': {exc} (the estimate needs the parameter count)") \
            from None


def workload(plan: Plan, gpu: str, prompt: float, training: TrainingModel = TrainingModel()) -> Workload:
    """The plan's GPU work: servers, trainings, and the requests of every target and served judge."""
    config = plan.config
    models = {m.label: m for m in config.models}
    servers = {m.label: _size(m, gpu) for m in plan.servers}
    cells = plan.tasks * len(config.conditions)
    trainings, jobs, left_out = [], [], []
    for target in plan.targets:
        model = models[target.model_label]
        if target.kind == "api":
            left_out.append(f"{target.label} (API model)")
            continue
        params = servers[model.label]
        out = expected_output_tokens(target.generation.max_tokens, params.mean_output_tokens)
        job = Job(target.label, model.label, cells, prompt, out, target.generation.concurrency)
        if target.kind == "adapter":
            t = target.training
            assert t is not None, "an adapter target carries its training"
            recipe = load_recipe(t.recipe_path)
            partial = recipe.method == "partial"
            trainings.append(Training(target.label, training.duration_s(gpu, params.params, recipe.training.epochs),
                                      target.label if partial else None))
            if partial:
                servers[target.label] = params
            job = Job(target.label, target.label if partial else model.label, cells, prompt, out,
                      target.generation.concurrency, lora=not partial, training=target.label)
        jobs.append(job)
    generation = list(jobs)
    for judge in config.judges:
        if judge.mode == "deterministic":
            continue
        if not judge.serve:
            left_out.append(f"judge {judge.label} (API model)")
            continue
        judge_model = next((m for m in config.models if m.base == judge.serve), None)
        if judge_model is None:
            left_out.append(f"judge {judge.label} (served from {judge.serve}, whose size the config does not give)")
            continue
        key = judge_model.label
        params = servers.setdefault(key, _size(judge_model, gpu))
        for job in generation:
            jobs.append(Job(f"{job.label}/judge {judge.label}", key, job.cells,
                            job.prompt_tokens + job.output_tokens + JUDGE_RUBRIC_TOKENS,
                            expected_output_tokens(JUDGE_MAX_TOKENS, params.mean_output_tokens),
                            judge.concurrency, after=job.label))
    return Workload(servers, tuple(trainings), tuple(jobs), tuple(left_out))


# ------------------------------------------------------------------ the schedule


@dataclass
class Schedule:
    policy: Policy
    makespan_s: float
    finished: dict[str, float]  # job label -> when its last cell finished
    trainings: dict[str, tuple[float, float]]  # training label -> (start, end)
    max_replicas: dict[str, int]
    gpu_busy_s: float


@dataclass
class _Server:
    params: EngineParams
    replicas: list[float] = field(default_factory=list)  # when each becomes ready

    def active(self, t: float) -> int:
        return sum(1 for r in self.replicas if r <= t)


def _rates(server: _Server, jobs: list[Job], remaining: dict[str, float], t: float) -> dict[str, float]:
    """Cells per second for each of ``jobs`` (ready, unfinished, on ``server``) at time ``t``."""
    replicas = server.active(t)
    if not replicas or not jobs:
        return {}
    demand = {j.label: min(j.concurrency * replicas, math.ceil(remaining[j.label] - 1e-9)) for j in jobs}
    total = sum(demand.values())
    busy = min(replicas, total)
    batch = min(total / busy, server.params.max_num_seqs)
    ratio = sum(demand[j.label] * j.prompt_tokens / j.output_tokens for j in jobs) / total
    tokens_s = busy * decode_rate(server.params, batch, ratio, any(j.lora for j in jobs))
    return {j.label: tokens_s * demand[j.label] / total / j.output_tokens for j in jobs}


def simulate(work: Workload, gpus: int, policy: Policy = "pool", dt: float = 0.5,
             max_s: float = 30 * 24 * 3600) -> Schedule:
    """Simulate the sweep on ``gpus`` GPUs under a placement policy and return its schedule."""
    servers = {key: _Server(p) for key, p in work.servers.items()}
    remaining = {j.label: float(j.cells) for j in work.jobs}
    ready_at: dict[str, float] = {}
    finished: dict[str, float] = {}
    checkpoint_servers = {t.checkpoint_server for t in work.trainings if t.checkpoint_server}
    first = [k for k in servers if k not in checkpoint_servers and any(j.server == k for j in work.jobs)]
    if gpus < len(first) + (1 if work.trainings else 0):
        raise EstimateError(f"the cluster has {gpus} GPUs; this plan needs at least {len(first) + bool(work.trainings)}"
                            f" (one per server: {', '.join(first)}{', and one for training' * bool(work.trainings)})")
    for key in first:
        servers[key].replicas.append(servers[key].params.startup_s)
    free = gpus - len(first)
    pending = sorted(work.trainings, key=lambda tr: -tr.duration_s)
    training_runs: dict[str, tuple[float, float]] = {}
    trained: dict[str, float] = {}
    max_replicas = {k: len(s.replicas) for k, s in servers.items()}
    busy_s, t = 0.0, 0.0
    jobs_by_server: dict[str, list[Job]] = {}
    for job in work.jobs:
        jobs_by_server.setdefault(job.server, []).append(job)
    while len(finished) < len(work.jobs):
        if t > max_s:
            raise EstimateError(f"the schedule did not finish within {max_s:.0f} simulated seconds")
        for label, (_, end) in training_runs.items():
            if end <= t and label not in trained:
                trained[label] = end
                free += 1
        for job in work.jobs:
            if job.label in ready_at:
                continue
            if job.training and job.training in trained:
                load = servers[job.server].params.adapter_load_s if job.lora else 0.0
                ready_at[job.label] = trained[job.training] + load
            elif job.after and job.after in finished:
                ready_at[job.label] = finished[job.after]
            elif not job.training and not job.after:
                ready_at[job.label] = 0.0
        # Servers with nothing left now or later give their GPUs back; idle extra replicas too.
        for key, server in servers.items():
            if not server.replicas:
                continue
            mine = jobs_by_server.get(key, [])
            if all(j.label in finished for j in mine):
                free += len(server.replicas)
                server.replicas = []
            elif len(server.replicas) > 1 and not any(j.label not in finished and ready_at.get(j.label, math.inf) <= t
                                                      for j in mine):
                free += len(server.replicas) - 1
                server.replicas = server.replicas[:1]
        while free and pending:
            tr = pending.pop(0)
            training_runs[tr.label] = (t, t + tr.duration_s)
            free -= 1
        for key in checkpoint_servers:
            server = servers[key]
            if free and not server.replicas and any(j.server == key and j.label in ready_at and j.label not in finished
                                                    for j in work.jobs):
                server.replicas.append(t + server.params.startup_s)
                free -= 1
        if policy == "pool":
            # GPUs a full checkpoint still in training will need are not lent out as replicas.
            reserve = sum(1 for key in checkpoint_servers if not servers[key].replicas and
                          any(j.server == key and j.label not in finished for j in work.jobs))
            while free > reserve:
                best, longest = None, 0.0
                for key, server in servers.items():
                    ready = [j for j in jobs_by_server.get(key, []) if j.label not in finished
                             and ready_at.get(j.label, math.inf) <= t]
                    if not server.replicas or not ready:
                        continue
                    # Remaining time with the replicas it has (all counted as up).
                    probe = _Server(server.params, [t] * len(server.replicas))
                    rates = _rates(probe, ready, remaining, t)
                    left = max(remaining[j.label] / rates[j.label] for j in ready if rates.get(j.label))
                    if left > server.params.startup_s and left > longest:
                        best, longest = key, left
                if best is None:
                    break
                servers[best].replicas.append(t + servers[best].params.startup_s)
                free -= 1
        for key, server in servers.items():
            max_replicas[key] = max(max_replicas.get(key, 0), len(server.replicas))
        busy_s += (gpus - free) * dt
        for key, server in servers.items():
            ready = [j for j in jobs_by_server.get(key, []) if j.label not in finished
                     and ready_at.get(j.label, math.inf) <= t]
            for label, rate in _rates(server, ready, remaining, t).items():
                if rate * dt >= remaining[label]:
                    finished[label] = t + remaining[label] / rate
                    remaining[label] = 0.0
                else:
                    remaining[label] -= rate * dt
        t += dt
    makespan = max([*finished.values(), *(end for _, end in training_runs.values())], default=0.0)
    return Schedule(policy, makespan, finished, training_runs, max_replicas, busy_s)


# ------------------------------------------------------------------ the bound


def job_gpu_s(job: Job, p: EngineParams) -> float:
    """GPU-seconds of a job's cells at the engine's best throughput (a full batch)."""
    rate = decode_rate(p, p.max_num_seqs, job.prompt_tokens / job.output_tokens, job.lora)
    return job.cells * job.output_tokens / rate


@dataclass(frozen=True)
class Bound:
    work_s: float
    critical_path_s: float

    @property
    def seconds(self) -> float:
        return max(self.work_s, self.critical_path_s)


def lower_bound(work: Workload, gpus: int) -> Bound:
    """A lower bound on the makespan: total GPU work over the GPUs, and the critical path."""
    trainings = {t.label: t for t in work.trainings}
    starts = sum(p.startup_s for key, p in work.servers.items() if any(j.server == key for j in work.jobs))
    total = starts + sum(t.duration_s for t in trainings.values()) + \
        sum(job_gpu_s(j, work.servers[j.server]) for j in work.jobs)
    earliest: dict[str, float] = {}
    for job in work.jobs:  # jobs come after what they wait for (workload's order)
        p = work.servers[job.server]
        begin = p.startup_s
        if job.training:
            trained = trainings[job.training].duration_s
            begin = trained + p.startup_s if trainings[job.training].checkpoint_server else \
                max(begin, trained + p.adapter_load_s)
        if job.after:
            begin = max(begin, earliest[job.after])
        # Its own work over the whole pool, and never faster than one reply at batch 1.
        earliest[job.label] = begin + max(job_gpu_s(job, p) / gpus, job.output_tokens * p.step_s(1))
    return Bound(total / gpus, max(earliest.values(), default=0.0))


@dataclass(frozen=True)
class Estimate:
    cluster: Cluster
    makespan_s: float
    one_per_base_s: float
    bound: Bound
    schedule: Schedule
    left_out: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.bound.seconds / self.makespan_s if self.makespan_s else 1.0

    def describe(self) -> dict:
        return {"cluster": self.cluster.describe(), "gpus": self.cluster.gpus, "policy": self.schedule.policy,
                "makespan_s": round(self.makespan_s, 1), "one_per_base_makespan_s": round(self.one_per_base_s, 1),
                "lower_bound_s": round(self.bound.seconds, 1), "work_bound_s": round(self.bound.work_s, 1),
                "critical_path_s": round(self.bound.critical_path_s, 1), "bound_over_makespan": round(self.ratio, 3),
                "max_replicas": self.schedule.max_replicas, "left_out": list(self.left_out)}


def estimate(plan: Plan, cluster: Cluster, training: TrainingModel = TrainingModel(),
             bench: Bench | None = None) -> Estimate:
    """The makespan of a sweep on a cluster: pooled servers against one per base, and the lower bound."""
    bench = bench or load_bench(plan.config.bench)
    work = workload(plan, cluster.gpu, mean_prompt_tokens(bench, plan.config.split, plan.config.conditions), training)
    pool = simulate(work, cluster.gpus, "pool")
    today = simulate(work, cluster.gpus, "one-per-base")
    return Estimate(cluster, pool.makespan_s, today.makespan_s, lower_bound(work, cluster.gpus), pool, work.left_out)
