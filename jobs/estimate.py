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
targets share it by requests in flight. GPUs are placed by the sweep's own rule (jobs.replicas;
see :func:`simulate`) under two policies: ``one-per-base`` (each server one replica from the
start: ``resources.replicas: 1``) and ``pool`` (trainings first, then replicas from the GPUs they
leave, for the server with the most work left per replica). API models (targets and judges) use no GPU and are left out.
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
from jobs.replicas import ahead_of_training, free_gpus, next_replica
from jobs.sweep_config import Plan
from serve.sim_model import (
    GPUS,
    EngineParams,
    TrainingModel,
    decode_rate,
    engine_params,
    expected_output_tokens,
    longest_output_tokens,
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
    longest_tokens: float = 0.0  # its longest reply (0: output_tokens); sets how long its last cells take


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
        longest = longest_output_tokens(target.generation.max_tokens, params.mean_output_tokens)
        job = Job(target.label, model.label, cells, prompt, out, target.generation.concurrency, longest_tokens=longest)
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
                      target.generation.concurrency, lora=not partial, training=target.label, longest_tokens=longest)
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
                            judge.concurrency, after=job.label,
                            longest_tokens=longest_output_tokens(JUDGE_MAX_TOKENS, params.mean_output_tokens)))
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


def _rates(server: _Server, jobs: list[Job], remaining: dict[str, float], t: float,
           drains: dict[str, float]) -> dict[str, float]:
    """Cells per second for each of ``jobs`` (ready, unfinished, on ``server``) at time ``t``.

    While a job has more cells than it keeps in flight, its cells end at the rate its share of
    the output tokens allows. Once every cell left is in flight (its drain, recorded in
    ``drains`` as the cells then in flight), they end one after another over the time its
    longest reply takes at the current step time: replies are spread in length, so the last ones
    are the long ones, not a geometric tail."""
    replicas = server.active(t)
    if not replicas or not jobs:
        return {}
    demand = {j.label: min(j.concurrency * replicas, math.ceil(remaining[j.label] - 1e-9)) for j in jobs}
    total = sum(demand.values())
    busy = min(replicas, total)
    batch = min(total / busy, server.params.max_num_seqs)
    ratio = sum(demand[j.label] * j.prompt_tokens / j.output_tokens for j in jobs) / total
    per_replica = decode_rate(server.params, batch, ratio, any(j.lora for j in jobs))
    rates = {}
    for j in jobs:
        if remaining[j.label] <= j.concurrency * replicas:
            in_flight = drains.setdefault(j.label, remaining[j.label])
            rates[j.label] = in_flight * (per_replica / batch) / (j.longest_tokens or j.output_tokens)
        else:
            rates[j.label] = busy * per_replica * demand[j.label] / total / j.output_tokens
    return rates


def simulate(work: Workload, gpus: int, policy: Policy = "pool", dt: float = 0.5,
             max_s: float = 30 * 24 * 3600) -> Schedule:
    """Simulate the sweep on ``gpus`` GPUs under a placement policy and return its schedule.

    The placement is the sweep's own (jobs.replicas, used by jobs.sweep): trainings are queued
    first, longest first (a full checkpoint first among equals); ``one-per-base`` starts one
    replica of every server at once (its count is fixed; a full checkpoint's once trained);
    ``pool`` starts a served judge's server at once (it is needed throughout) and any other
    replica only on a GPU no training still to run needs (:func:`free_gpus`): first one ahead of
    the training that ends last (:func:`ahead_of_training`), then for the server
    :func:`next_replica` names. A server with no work left gives its GPUs back."""
    servers = {key: _Server(p) for key, p in work.servers.items()}
    remaining = {j.label: float(j.cells) for j in work.jobs}
    ready_at: dict[str, float] = {}
    finished: dict[str, float] = {}
    jobs_by_server: dict[str, list[Job]] = {}
    for job in work.jobs:
        jobs_by_server.setdefault(job.server, []).append(job)
    checkpoint_servers = {t.checkpoint_server for t in work.trainings if t.checkpoint_server}
    declared = [k for k in servers if k not in checkpoint_servers and k in jobs_by_server]
    judged = {j.server for j in work.jobs if j.after}  # judges' servers: the sweep pins them
    fixed = set(servers) if policy == "one-per-base" else set()
    at_once = declared if policy == "one-per-base" else [k for k in declared if k in judged]
    if gpus < len(at_once) + (1 if work.trainings else 0) or gpus < 1:
        raise EstimateError(f"the cluster has {gpus} GPUs; this plan needs at least "
                            f"{max(1, len(at_once) + bool(work.trainings))} (one per server started at once: "
                            f"{', '.join(at_once) or 'none'}{', and one for training' * bool(work.trainings)})")
    for key in at_once:
        servers[key].replicas.append(servers[key].params.startup_s)
    pending = sorted(work.trainings, key=lambda tr: (-tr.duration_s, tr.checkpoint_server is None))
    training_runs: dict[str, tuple[float, float]] = {}
    trained: dict[str, float] = {}
    max_replicas = {k: len(s.replicas) for k, s in servers.items()}
    busy_s, t = 0.0, 0.0
    drains: dict[str, float] = {}
    started_ahead: set[str] = set()
    job_of = {j.training: j for j in work.jobs if j.training}

    def held() -> int:
        return sum(len(s.replicas) for s in servers.values())

    def work_left(key: str) -> float:
        return sum(job_gpu_s(j, servers[key].params) for j in jobs_by_server.get(key, []) if j.label not in finished)

    while len(finished) < len(work.jobs):
        if t > max_s:
            raise EstimateError(f"the schedule did not finish within {max_s:.0f} simulated seconds")
        for tr in work.trainings:
            run = training_runs.get(tr.label)
            if run and run[1] <= t and tr.label not in trained:
                trained[tr.label] = run[1]
                if tr.checkpoint_server:  # served alone, once trained
                    declared.append(tr.checkpoint_server)
                    if tr.checkpoint_server in fixed:  # a fixed count starts at once
                        server = servers[tr.checkpoint_server]
                        server.replicas.append(t + server.params.startup_s)
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
        for key, server in servers.items():  # no work left: its GPUs go to the rest
            if server.replicas and all(j.label in finished for j in jobs_by_server.get(key, [])):
                server.replicas = []
        running = sum(1 for label in training_runs if label not in trained)
        while pending and held() + running < gpus:  # Ray admits a queued training on a GPU left free
            tr = pending.pop(0)
            training_runs[tr.label] = (t, t + tr.duration_s)
            running += 1
        trainings_left = len(pending) + running
        ends = {tr.label: (training_runs[tr.label][1], job_of[tr.label].server) for tr in work.trainings
                if tr.label in training_runs and tr.label not in trained and not tr.checkpoint_server}
        startups = {k: servers[k].params.startup_s for k in declared if k not in fixed}
        ahead = ahead_of_training(t, ends, startups, started_ahead) \
            if policy == "pool" and free_gpus(gpus, held(), 1.0, trainings_left, 1.0) >= 1 else None
        if ahead:
            started_ahead.add(ahead[0])
            servers[ahead[1]].replicas.append(t + servers[ahead[1]].params.startup_s)
        while policy == "pool" and free_gpus(gpus, held(), 1.0, trainings_left, 1.0) >= 1:
            chosen = next_replica({k: work_left(k) for k in declared},
                                  {k: len(servers[k].replicas) for k in declared}, fixed)
            if chosen is None:
                break
            servers[chosen].replicas.append(t + servers[chosen].params.startup_s)
        for key, server in servers.items():
            max_replicas[key] = max(max_replicas.get(key, 0), len(server.replicas))
        busy_s += min(gpus, held() + running) * dt
        for key, server in servers.items():
            ready = [j for j in jobs_by_server.get(key, []) if j.label not in finished
                     and ready_at.get(j.label, math.inf) <= t]
            for label, rate in _rates(server, ready, remaining, t, drains).items():
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
