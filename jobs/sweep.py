"""The sweep as a Ray job: ``ray job submit --working-dir . -- python -m jobs.sweep CONFIG --out /abs``.

One structure: an async pipeline per target (train → register → generate → judge), each step
awaiting Ray object refs, so the driver never blocks on one of them. Trainings are submitted
before anything waits; servers start at once on CPU nodes, and on a GPU pool as the trainings
leave GPUs free (:mod:`jobs.replicas`); an adapter's cells start as soon as it is registered. The decisions between steps
(retry, missing, re-judge) are the pure functions of :mod:`jobs.decisions`.

Every process declares what it uses (:mod:`jobs.resources`): servers their GPUs or bound
cores, trainers theirs, drivers and judge fan-outs a twentieth of a CPU. A server actor
records the adapters registered on it and loads them again when Ray restarts it; generation
drivers watch their engine and re-queue in-flight cells only when it is dead or stalled.

Outputs, under ``OUT/<run>/``: ``runs/<target>/`` (one generation run per target, with its
verdicts), the merged ``episodes.parquet`` / ``verdicts.parquet``, ``manifest.json``,
``stats.json``, ``report.md``, ``report.html`` and plots, and ``run.json``: stage timings,
resources, counts (timed-out, re-queued, regenerated cells, judge give-ups), what is missing
and why, for this attempt and every earlier one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from harness.bench import bench_spec
from harness.client import SERVER_API_KEY_ENV, Sampling
from harness.generate import Target
from harness.generation_job import GenerateRequest, GenerationSummary, generate_shard, run_generation
from harness.judging.job import JudgeRequest, JudgingSummary, run_judging
from harness.judging.verdict import Mode
from harness.libenv import apply_env_defaults
from harness.models import ResolvedModel, resolve
from harness.naming import adapter_alias, adapter_folder
from harness.runstore import update_manifest
from jobs.decisions import (
    COUNTERS,
    MAX_GENERATION_ATTEMPTS,
    add_generation_counts,
    after_generation,
    after_judging,
    target_complete,
    with_history,
)
from jobs.replicas import ahead_of_training, free_gpus, next_replica, training_weight, work_weight
from jobs.resources import DRIVER_CPUS, Declaration, ResourceModel, driver_nodes, resource_model
from jobs.sweep_config import EngineSpec, PlannedTarget, load_config, make_plan
from jobs.turns import TurnGate
from jobs.work_queue import CellQueue, RayCellSource, aget
from serve.adapters import inspect_adapter, lora_capacity
from serve.engine_watch import Health
from serve.hardware import cpu_info
from serve.server import COMPACT_JSON_ARGS, HOST, ServerSpec
from serve.serving import Serving, server_spec
from serve.sim_engine import SimSpec
from serve.sim_model import TrainingModel, engine_params, parse_size
from train.corpus import CorpusRequest, CorpusSummary, build_corpus
from train.recipe import load_recipe
from train.trainer import TrainingSummary, train_one

# torch is imported by _bind_cores, in trainer workers only: seconds for the driver otherwise. Every
# Ray worker imports this module to run a task or actor of it, so what only the sweep's own process
# needs (the probe battery and the report: scipy, matplotlib) is imported where it is used.

NAMESPACE = "skillsweep"


def log(message: str) -> None:
    """Print a timestamped line of the sweep's log."""
    print(f"[sweep {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------ Ray workers

@ray.remote(max_restarts=3, max_task_retries=0)
class ServerActor:
    """One server replica of a base model (or of a fully fine-tuned checkpoint): vLLM, or the
    simulated engine when the sweep says ``engine: sim``.

    The adapters registered on its base are listed in ``adapters_file`` (the sweep writes it before
    it loads an adapter on the live replicas); a replica started later, or restarted by Ray (which
    runs ``__init__`` again), loads them all before it answers, so no caller has to remember them.
    ``bind_node``: listen on this node's address (other nodes use it) behind ``api_key``."""

    def __init__(self, model_ref: str, served_name: str, max_model_len: int, kv_cache_gib: int,
                 lora_ranks: list[int], cpu_bind: str | None, adapters_file: str, engine: EngineSpec,
                 size: str | None, bind_node: bool = False, api_key: str | None = None):
        use_server_key(api_key)
        self.served_name = served_name
        self.adapters_file = Path(adapters_file)
        self.sim = engine.kind == "sim"
        if self.sim:
            # Nothing to load: the simulated engine models the base by its size.
            self.base = ResolvedModel(model_ref, "hub", model_ref, model_ref)
            capacity = lora_capacity(len(lora_ranks), lora_ranks)
            spec: ServerSpec | SimSpec = SimSpec(
                model=model_ref, served_name=served_name, gpu=engine.gpu, model_size=(size or "1b").lower(),
                time_scale=engine.time_scale, max_lora_rank=capacity.max_lora_rank, max_loras=capacity.max_loras,
                max_cpu_loras=capacity.max_cpu_loras, max_model_len=max_model_len,
                # The replica's start-up counts from this process's (Ray started it for the replica).
                started_at=psutil.Process().create_time())
        else:
            self.base = resolve(model_ref)
            # Slots from the adapters this server will hold and this replica's memory (serve.adapters).
            spec = server_spec(self.base, served_name, lora_ranks=lora_ranks, enable_lora=True,
                               max_model_len=max_model_len, kv_cache_gib=kv_cache_gib, cpu_bind=cpu_bind,
                               extra_args=COMPACT_JSON_ARGS)
        self.spec = spec
        host = ray.util.get_node_ip_address() if bind_node else HOST
        self.serving = Serving(self.base, spec, host=host, api_key=api_key).start()  # type: ignore[arg-type]
        self.server = self.serving.server
        self.served: dict[str, str] = {}
        self.loads: dict[tuple[str, str], dict] = {}
        for alias, path in self._registered().items():
            self.load_adapter(alias, path)

    def _registered(self) -> dict[str, str]:
        try:
            return json.loads(self.adapters_file.read_text())
        except (OSError, ValueError):
            return {}

    def load_adapter(self, alias: str, path: str) -> dict:
        """Load (and preflight) an adapter; asked again for the same one, answers what it did then."""
        if (alias, path) in self.loads:
            return self.loads[alias, path]
        # The simulated engine's replies say nothing of the weights: no preflight to compare.
        loaded, report = self.serving.load(alias, path, check=not self.sim)
        self.served[alias] = loaded.served_name
        self.loads[alias, path] = {"served_name": loaded.served_name,
                                   "preflight_differing": report.differing if report else None,
                                   "preflight_probes": report.probes if report else None}
        return self.loads[alias, path]

    def info(self) -> dict:
        if not self.server.running():
            # The engine died under a live actor: exit, so Ray restarts the actor (a new server,
            # its adapters loaded again) and callers see a new process.
            os._exit(1)
        return {"url": self.server.base_url, "api_base": self.server.api_base, "served_name": self.served_name,
                "actor_pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "engine": self.spec.engine_args(), "base_identity": self.base.identity,
                "adapters": dict(self.served)}

    def restart_engine(self) -> dict:
        """A stalled engine is replaced: Ray restarts the actor, as for a dead one."""
        self.server.stop()
        os._exit(1)

    def stop(self) -> None:
        self.server.stop()


def use_server_key(api_key: str | None) -> None:
    """Make this worker process call the sweep's servers with the sweep's key (passed as an
    argument, never through Ray's runtime env, which its dashboard shows)."""
    if api_key:
        os.environ[SERVER_API_KEY_ENV] = api_key


def _bind_cores(cores: list[int]) -> None:
    """CPU nodes: keep this process (and torch's threads) on its own cores."""
    if not cores:
        return
    import torch

    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))


@ray.remote(max_calls=1)  # a fresh worker per training: its core binding must not outlive it
def train_task(recipe_path: str, seed: int, out: str, model: str, corpus: CorpusSummary | str | None,
               cores: list[int], engine: EngineSpec | None = None, size: str | None = None,
               began: float | None = None) -> TrainingSummary:
    """Ray task: train one recipe with one seed on the given cores, skipped when already trained.
    ``corpus``: the corpus task's summary (its ref, resolved by Ray) or an existing corpus's path.
    With a simulated ``engine`` the training is simulated too: its modelled duration, scaled,
    counted from ``began`` when given (:func:`train.sim_training.sim_train_one`)."""
    _bind_cores(cores)
    corpus_path = corpus.corpus if isinstance(corpus, CorpusSummary) else corpus
    meta_file = Path(out) / "training_meta.json"
    recipe = load_recipe(recipe_path)
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("recipe") == recipe.model_dump() and meta.get("seed") == seed:
            return TrainingSummary.from_dict(meta, skipped=True)
    if engine is not None and engine.kind == "sim":
        from train.sim_training import sim_train_one

        return sim_train_one(recipe, seed, Path(out), model=model, size=size or "1b", gpu=engine.gpu,
                             time_scale=engine.time_scale, began=began)
    if corpus_path is None:
        raise ValueError(f"training {recipe.name} s{seed}: no corpus (set the sweep's corpus block)")
    return train_one(recipe, seed, Path(out), model=model, corpus=corpus_path)


def _reconnector(server, pid: int, queue=None):
    """A :data:`harness.generate.Reconnect` for a driver of ``server`` (its actor, whose process
    is ``pid`` now): a lost engine is waited for (Ray restarts the actor, which re-registers its
    adapters; a stalled one is told to exit first), unless the other replicas sharing ``queue``
    finish the cells first."""
    serving = {"pid": pid}

    async def reconnect(url: str, health) -> tuple[str, bool] | None:
        if health is Health.STALLED:
            server.restart_engine.remote()  # the actor exits; Ray starts it again
        for _ in range(60):  # a restart is a new server start: allow some minutes
            if queue is not None and (await aget(queue.state.remote()))["finished"]:
                return None  # the other replicas did the rest: nothing to come back for
            try:
                info = await aget(server.info.remote())
            except ray.exceptions.RayActorError:
                await asyncio.sleep(5)
                continue
            restarted = info["actor_pid"] != serving["pid"]
            serving["pid"] = info["actor_pid"]
            return info["api_base"], restarted
        return None

    return reconnect


@ray.remote
def generate_task(request: GenerateRequest, server=None, api_key: str | None = None) -> GenerationSummary:
    """One target's cells (the run's own pass: it folds the replicas' shards in and generates
    what they left). With ``server`` (its actor), a lost engine is waited for."""
    use_server_key(api_key)
    reconnect = _reconnector(server, ray.get(server.info.remote())["actor_pid"]) if server is not None else None
    summary = run_generation(request, reconnect=reconnect)
    summary.node = ray.util.get_node_ip_address()
    return summary


# No call is retried by Ray: a re-run under the same shard would find its first run's leases still
# held; a failed driver's leases are handed back by the sweep instead (Sweep._on_replicas).
@ray.remote(num_cpus=DRIVER_CPUS, max_restarts=-1, max_task_retries=0)
class DriverHost:
    """The generation drivers of a sweep's server replicas, as coroutines on one event loop: one
    driver per (target, replica) would be a process each, and each would pay litellm's import
    (about 4 CPU-seconds) at the moment a training ends and its cells start, when the CPU is
    wanted most. A sweep runs one host on each node with a CPU to spare (:meth:`Sweep.start_driver_hosts`).
    An async actor: Ray runs up to 1,000 calls at once on its loop, far more drivers than a sweep has."""

    def __init__(self, api_key: str | None = None):
        use_server_key(api_key)
        from harness.client import quiet_litellm

        quiet_litellm()  # imported now, while the first replica starts, not when its cells come

    async def drive(self, request: GenerateRequest, server, queue, shard: str) -> GenerationSummary:
        """This replica's share of a target's cells, leased from ``queue`` (a :class:`CellQueue`)
        and recorded in ``shard``: a lost engine's cells go back to the queue at once, for the
        other replicas, and this driver rejoins when its engine is back (unless they finished)."""
        reconnect = _reconnector(server, (await aget(server.info.remote()))["actor_pid"], queue)
        summary = await generate_shard(request, RayCellSource(queue, shard), shard, reconnect=reconnect)
        summary.node = ray.util.get_node_ip_address()
        return summary


@ray.remote
def judge_task(request: JudgeRequest, api_key: str | None = None) -> JudgingSummary:
    """Ray task: judge a run with one judge; a failure returns its error instead of raising."""
    use_server_key(api_key)
    try:
        return run_judging(request)
    except Exception as exc:  # one judge failing leaves the others' verdicts standing
        return JudgingSummary(request.run, request.label, str(request.mode), error=_short(exc))


@ray.remote
def probe_task(request, api_key: str | None = None) -> dict:
    """Ray task: run a probe battery."""
    from harness.probes.job import run_probe_battery

    use_server_key(api_key)
    return run_probe_battery(request)


@ray.remote
def corpus_task(request: CorpusRequest, api_key: str | None = None) -> CorpusSummary:
    """Ray task: build the training corpus from a teacher's judged answers."""
    use_server_key(api_key)
    return build_corpus(request)


# ------------------------------------------------------------------ the driver

@dataclass
class ServerState:
    """One server key: what it serves, its replicas, and the events steps wait on."""

    model_ref: str | None = None  # None until start_server declares it
    max_model_len: int = 0
    # Running; the first also serves judges, probes, the corpus and single requests.
    replicas: list[ray.actor.ActorHandle] = field(default_factory=list)
    started: int = 0  # replicas started so far (numbered 0, 1, … in their actor names)
    retired: bool = False  # stopped for good once its work was done
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # a first replica is started
    added: asyncio.Event = field(default_factory=asyncio.Event)  # set, then replaced, at each new replica


class Sweep:
    def __init__(self, config_path: str, out_root: Path, run: str | None, resume: bool):
        self.config = load_config(config_path)
        self.plan = make_plan(self.config)
        self.run = run or self.config.name
        self.folder = (out_root / self.run).resolve()
        if self.folder.exists() and any(self.folder.iterdir()) and not resume:
            raise SweepRefused(f"{self.folder} exists: pass --resume to continue it, or --run NAME for a new run")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.bench = bench_spec(self.config.bench)
        self.models = {m.label: m for m in self.config.models}
        self.serving: dict[str, ServerState] = {}  # by server key (see _server)
        self.replica_count = 0  # replicas running, all servers: each takes its declaration in turn
        self.stopping: list[asyncio.Future] = []
        self.retired_handles: list[ray.actor.ActorHandle] = []
        # Where the replicas' generation drivers run, and how many each runs now (driver_host).
        self.hosts: list[ray.actor.ActorHandle] = []
        self.host_load: list[int] = []
        self.adapter_paths: dict[str, str] = {}  # alias → folder of every adapter registered
        self.pinned: set[str] = set()  # servers judges, the corpus teacher or probes use: never retired
        self.remaining: dict[str, float] = {}  # generation work left per server key (jobs.replicas)
        self.trainings_left = 0
        self.trainings_running = 0  # submitted to Ray and not ended (some may wait for a GPU)
        # Running trainings the throughput model can time: label → (expected end, server key), and
        # those whose server got a replica ahead of their end (jobs.replicas.ahead_of_training).
        self.training_ends: dict[str, tuple[float, str]] = {}
        self.started_ahead: set[str] = set()
        self.gpus = 0.0
        # On several nodes servers bind their node's address behind this key (main() explains).
        self.bind_node = False
        self.api_key: str | None = None
        self.resources: ResourceModel | None = None
        self.gate = TurnGate(False)
        self.corpus_done = asyncio.Event()
        self.generated: set[str] = set()  # targets whose cells are in (the probes follow them)
        self.probe_lock = asyncio.Lock()  # one probe job at a time: they share a run folder
        self.stage: dict[str, Any] = {name: {"wall_s": 0.0} for name in
                                       ("corpus", "training", "generation", "judging", "report")}
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.missing: list[dict] = []
        self.failures: list[dict] = []
        self.started = time.time()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S")

    # -- helpers
    def sub_run(self, label: str) -> Path:
        return self.folder / "runs" / label

    def _complete(self, label: str) -> bool:

        sub = self.sub_run(label)
        try:
            manifest = json.loads((sub / "manifest.json").read_text())
            episodes = pl.read_parquet(sub / "episodes.parquet")
            verdicts = pl.read_parquet(sub / "verdicts.parquet")
        except Exception:  # anything missing or unreadable: not complete, do the work
            return False
        counts = verdicts.group_by("judge_label").len()
        return target_complete(missing_cells=manifest.get("missing_cells"), episodes=len(episodes),
                               verdicts_per_judge=dict(zip(counts["judge_label"], counts["len"], strict=True)),
                               expected=self.plan.tasks * len(self.config.conditions),
                               judges=[j.label for j in self.config.judges])

    def _lora_ranks(self, model_label: str) -> list[int]:
        """The ranks of the LoRA adapters this sweep will register on ``model_label``'s server."""
        recipes = [load_recipe(t.recipe_path) for t in self.plan.trainings if t.model_label == model_label]
        return [r.lora.r for r in recipes if r.method == "lora"]

    def _server_keys(self, pending) -> list[tuple[str, str, int]]:
        """(key, model reference, max_model_len) of every server the pending targets need."""
        keys: dict[str, tuple[str, str, int]] = {}
        for target in pending:
            model = self.models[target.model_label]
            if model.base:
                keys.setdefault(model.label, (model.label, model.base, model.max_model_len))
        for judge in self.config.judges:
            if judge.serve:
                key, ref, length = self._judge_server(judge)
                keys.setdefault(key, (key, ref, length))
        return list(keys.values())

    def _judge_server(self, judge) -> tuple[str, str, int]:
        model = next((m for m in self.config.models if m.base == judge.serve), None)
        return (model.label, judge.serve, model.max_model_len) if model else (f"judge-{judge.label}", judge.serve, 4096)

    def _size(self, key: str) -> str | None:
        """The parameter count of what ``key``'s server serves (the simulated engine's model size)."""
        if key in self.models:
            return self.models[key].size
        target = next((t for t in self.plan.targets if t.label == key), None)
        if target:  # a fully fine-tuned checkpoint
            return self.models[target.model_label].size
        ref = self.serving[key].model_ref  # a served judge
        return next((m.size for m in self.config.models if m.base == ref), None)

    def _server_key(self, target) -> str | None:
        """The server a target's cells go to (a full checkpoint's is its own, once trained)."""
        model = self.models[target.model_label]
        if not model.base:
            return None
        if target.kind == "adapter" and _recipe_method(target.training.recipe_path) == "partial":
            return target.label
        return model.label

    def _training_weight(self, target) -> float:
        assert target.training is not None, "an adapter target carries its training"
        return training_weight(self.models[target.model_label].size,
                               load_recipe(target.training.recipe_path).training.epochs)

    def _work(self, target) -> float:
        return work_weight(self.plan.tasks * len(self.config.conditions), target.generation.max_tokens,
                           self.models[target.model_label].size)

    def _done_with(self, target) -> None:
        """A target needs its server no more (generated, or its training failed): fewer replicas for it."""
        key = self._server_key(target)
        if key is not None and key in self.remaining:
            self.remaining[key] = max(0.0, self.remaining[key] - self._work(target))
            self.retire(key)

    def fixed_replicas(self, key: str) -> int | None:
        """The replicas the config asks of ``key``'s server (its model's, else resources'), or None."""
        model = self.models.get(key)
        return (model.replicas if model and model.replicas else None) or self.config.resources.replicas

    def _adapters_file(self, key: str) -> Path:
        return self.folder / "servers" / f"{key}.adapters.json"

    def pooled(self) -> bool:
        """Replicas follow the GPU pool (jobs.replicas): GPUs to serve from, and no fixed count."""
        return self.gpus > 0 and self.config.resources.serve_gpus > 0

    def _server(self, key: str) -> ServerState:
        """``key``'s record, made on first use: a step may wait for a server not yet declared."""
        return self.serving.setdefault(key, ServerState())

    def declared(self) -> dict[str, ServerState]:
        return {key: state for key, state in self.serving.items() if state.model_ref is not None}

    def start_server(self, key: str, model_ref: str, max_model_len: int, grow: bool = True) -> None:
        """Declare ``key``'s server and start what it gets now: the replicas its config fixes; off a
        GPU pool one; on a pool none unless it is pinned (judges, the teacher or probes need it: a
        teacher waiting behind the trainings it feeds would never start). The rest come from
        :meth:`grow` as the trainings leave GPUs free (jobs.replicas). ``grow=False``: the caller
        grows once every server it starts is declared, so the first declared does not take every GPU."""
        state = self._server(key)
        if state.model_ref is not None:
            return
        state.model_ref, state.max_model_len = model_ref, max_model_len
        fixed = self.fixed_replicas(key)
        for _ in range(fixed or (1 if key in self.pinned or not self.pooled() else 0)):
            self.add_replica(key)
        if grow:
            self.grow()

    def add_replica(self, key: str) -> ray.actor.ActorHandle:
        """One more replica of ``key``'s server; it loads the adapters registered so far as it starts."""
        resources = self.resources
        assert resources is not None, "execute() sets it before starting servers"
        state = self.serving[key]
        index, self.replica_count = self.replica_count, self.replica_count + 1
        declared = resources.server(index)
        number, state.started = state.started, state.started + 1
        self._adapters_file(key).parent.mkdir(parents=True, exist_ok=True)
        # @ray.remote made the class an ActorClass; mypy keeps a decorated class's own type.
        handle = ServerActor.options(  # type: ignore[attr-defined]
            name=f"server:{self.run}:{key}:{number}", namespace=NAMESPACE, **declared.options(),
        ).remote(state.model_ref, key, state.max_model_len, self.config.resources.kv_cache_gib, self._lora_ranks(key),
                 resources.cpu_bind(index), str(self._adapters_file(key)), self.config.engine, self._size(key),
                 self.bind_node, self.api_key)
        state.replicas.append(handle)
        if not self.hosts:  # where its drivers will run, ready by the time the replica is
            self.start_driver_hosts()
        state.ready.set()
        # Wake the generation steps running on this server: they start a driver for the new replica.
        event, state.added = state.added, asyncio.Event()
        event.set()
        log(f"server {key}: starting replica {number} ({declared.describe()})")
        return handle

    async def register(self, key: str, alias: str, path: str) -> dict:
        """Register an adapter on every replica of ``key``: listed first, so a replica starting (or
        restarting) now or later loads it too, then loaded on each replica there is. Only the
        first replica's load is awaited: one still starting must not hold the adapter's cells back
        (each replica's driver loads it again, a no-op once loaded, before it sends anything)."""
        file = self._adapters_file(key)
        try:
            registered = json.loads(file.read_text())
        except (OSError, ValueError):
            registered = {}
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps({**registered, alias: path}, indent=2))
        os.replace(tmp, file)
        self.adapter_paths[alias] = path
        first, *rest = [h.load_adapter.remote(alias, path) for h in list(self.serving[key].replicas)]
        del rest  # loaded as those replicas come up; their drivers check
        return await aget(first)

    def _startup_s(self, key: str) -> float | None:
        """A new replica's start-up in wall seconds by the throughput model (the engine's GPU
        class; ``h100`` unless the config names one), or None for a model without a size."""
        try:
            params = engine_params(self.config.engine.gpu, parse_size(self._size(key) or ""))
        except ValueError:
            return None
        return params.startup_s * self.config.engine.time_scale

    def _expect_end(self, target) -> None:
        """Note when a LoRA training just submitted should end (the throughput model's duration,
        counted from now: right for the trainings the pool starts at once, the longest among
        them), and look again when its server's replica would have to start to be up by then."""
        key, model = self._server_key(target), self.models[target.model_label]
        startup = self._startup_s(key) if key and key == model.label and self.pooled() else None
        if key is None or startup is None:
            return
        t = target.training
        assert t is not None, "an adapter target carries its training"
        duration = TrainingModel().duration_s(self.config.engine.gpu, parse_size(model.size or ""),
                                              load_recipe(t.recipe_path).training.epochs)
        end = time.time() + duration * self.config.engine.time_scale
        self.training_ends[target.label] = (end, key)
        asyncio.get_running_loop().call_later(max(0.0, end - startup - time.time()), self.grow)

    def grow(self) -> None:
        """Replicas from GPUs no server holds and no training still needs (jobs.replicas): one
        ahead of the training that ends last, then the servers with none, then more of the busiest."""
        if not self.pooled():
            return
        serve_gpus = self.config.resources.serve_gpus
        servers = self.declared()
        fixed = {key for key in servers if self.fixed_replicas(key)}
        startups = {key: s for key in servers if key not in fixed and not servers[key].retired
                    and (s := self._startup_s(key)) is not None}
        ahead = ahead_of_training(time.time(), self.training_ends, startups, self.started_ahead)
        if ahead and free_gpus(self.gpus, self.replica_count, serve_gpus, self.trainings_left,
                               self.config.resources.train_gpus) >= serve_gpus:
            self.started_ahead.add(ahead[0])
            log(f"server {ahead[1]}: one more replica, to be up when {ahead[0]} ends")
            self.add_replica(ahead[1])
        while free_gpus(self.gpus, self.replica_count, serve_gpus, self.trainings_left,
                        self.config.resources.train_gpus) >= serve_gpus:
            counts = {key: len(state.replicas) for key, state in servers.items()}
            # Work left per server; a judge's or teacher's server has none of its own but is needed.
            # (one replica for that: judges, the teacher and probes use the first alone)
            work = {key: self.remaining.get(key, 0.0) or (1e-9 if key in self.pinned and not state.replicas else 0.0)
                    for key, state in servers.items() if not state.retired}
            key = next_replica(work, counts, fixed)
            if key is None:
                return
            self.add_replica(key)

    def retire(self, key: str) -> None:
        """On a GPU pool: stop ``key``'s replicas once nothing needs them (no work left, not a
        judge's or teacher's, no probes to run), so their GPUs serve or train something else."""
        if not self.pooled() or key in self.pinned or self.remaining.get(key, 0.0) > 1e-6 \
                or self.fixed_replicas(key) or not self._server(key).replicas:
            return
        state = self.serving[key]
        handles, state.replicas, state.retired, state.ready = state.replicas, [], True, asyncio.Event()
        self.replica_count -= len(handles)
        self.retired_handles += handles
        self.stopping.append(asyncio.ensure_future(self._stop(handles)))
        log(f"server {key}: no work left, {len(handles)} replica(s) stopped; their GPUs go to the rest")
        self.grow()

    async def _stop(self, handles) -> None:
        for handle in handles:
            await asyncio.to_thread(stop_replica, handle)

    def start_driver_hosts(self) -> None:
        """One :class:`DriverHost` on each node that keeps a CPU to spare for drivers however its
        GPUs are used (:func:`jobs.resources.driver_nodes`); one anywhere when no node does.
        Started with the first replica: its start-up covers litellm's import, and on a GPU pool
        the trainings have started by then (a host starting beside them would delay them)."""
        nodes = [(n["NodeID"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
                 for n in ray.nodes() if n.get("Alive")]
        chosen = driver_nodes(nodes, self.config.resources.serve_gpus, self.config.resources.train_gpus)
        placements = [{"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)} for node in chosen]
        for number, options in enumerate(placements or [{}]):
            self.hosts.append(DriverHost.options(  # type: ignore[attr-defined]
                name=f"drivers:{self.run}:{number}", namespace=NAMESPACE, **options).remote(self.api_key))
        self.host_load = [0] * len(self.hosts)

    async def on_driver_host(self, call):
        """``call(host)`` on the driver host running the fewest drivers now."""
        index = min(range(len(self.hosts)), key=self.host_load.__getitem__)
        self.host_load[index] += 1
        try:
            return await aget(call(self.hosts[index]))
        finally:
            self.host_load[index] -= 1

    async def server_info(self, key: str) -> dict:
        """The first replica's info (judges, probes, the corpus and single requests use it); waits
        for the server's first replica to be started (on a GPU pool, once a GPU is free)."""
        state = self._server(key)
        await state.ready.wait()
        return await aget(state.replicas[0].info.remote())

    async def judge_endpoint(self, judge) -> tuple[str | None, str | None]:
        if judge.serve:
            info = await self.server_info(self._judge_server(judge)[0])
            return f"hosted_vllm/{info['served_name']}", info["api_base"]
        return judge.model, judge.api_base

    def generation_request(self, target, served: str, server: dict | None) -> GenerateRequest:
        """The target's cells on ``server`` (a replica's info), or on its API model when None."""
        g = target.generation
        return GenerateRequest(run=str(self.sub_run(target.label)), model=served, bench=self.bench,
                               split=self.config.split, conditions=list(self.config.conditions),
                               sampling=Sampling(max_tokens=g.max_tokens, repetition_penalty=g.repetition_penalty),
                               concurrency=g.concurrency, label=target.label,
                               backend="api" if server is None else "vllm",
                               url=server["api_base"] if server else None,
                               dtype=server["engine"].get("dtype") if server else None)

    def _driver(self):
        return {"num_cpus": DRIVER_CPUS}

    # -- stages
    async def build_corpus(self):
        """The corpus task's ref (trainings depend on it), or the existing corpus path."""
        spec = self.config.corpus
        path = Path(spec.path) if Path(spec.path).is_absolute() else self.folder / spec.path
        if path.is_file():
            return str(path)
        teacher_url, teacher = None, spec.teacher
        if spec.teacher in self.declared():
            info = await self.server_info(spec.teacher)
            teacher_url, teacher = info["url"], info["served_name"]
        judge = next((j for j in self.config.judges if j.label == spec.judge), None)
        judge_model, judge_api = await self.judge_endpoint(judge) if judge else (None, None)
        log(f"corpus: tracing the train split with teacher {spec.teacher}")
        request = CorpusRequest(teacher=teacher, teacher_url=teacher_url, out=path, bench=self.bench,
                                judge=judge_model, judge_api_base=judge_api,
                                mode=judge.mode if judge else Mode.DETERMINISTIC,
                                sampling=Sampling(max_tokens=spec.max_tokens))
        return corpus_task.options(**self._driver()).remote(request, self.api_key)

    async def run_corpus(self, ref) -> None:
        started = time.time()
        try:
            async with self.gate.serving():
                summary = await aget(ref)
        finally:
            self.corpus_done.set()
        log(f"corpus: kept {summary.rows} of {summary.traces} traces → {summary.corpus}")
        self.stage["corpus"] = {"wall_s": round(time.time() - started, 2), **summary.as_dict()}

    async def train(self, target, corpus):
        """A training, in its turn: after the corpus, and (in-turn) while no serving step runs."""
        await self.corpus_done.wait()
        async with self.gate.training():
            if self.gate.enabled:
                log(f"{target.label}: training (serving waits: the cores take turns)")
            return await aget(self.submit_training(target, corpus))

    def submit_training(self, target, corpus) -> ray.ObjectRef:
        t = target.training
        out = self.folder / "adapters" / adapter_folder(t.recipe_name, t.seed)
        assert self.resources is not None, "execute() sets it before training"
        declared: Declaration = self.resources.trainer
        self._expect_end(target)
        # A training Ray can start now (a GPU is free for it) began now, as far as a simulated one
        # is concerned; one that waits in Ray's queue begins when it runs.
        train_gpus = self.config.resources.train_gpus
        at_once = self.pooled() and train_gpus > 0 and self.gpus - self.replica_count * \
            self.config.resources.serve_gpus - self.trainings_running * train_gpus >= train_gpus
        self.trainings_running += 1
        return train_task.options(**declared.options()).remote(
            t.recipe_path, t.seed, str(out), t.base, corpus, list(declared.cores), self.config.engine,
            self.models[target.model_label].size, time.time() if at_once else None)

    async def pipeline(self, target, training_ref) -> None:
        """train → register → generate → judge, for one target."""
        model = self.models[target.model_label]
        server_key = model.label if model.base else None
        if target.kind == "adapter":
            started = time.time()
            try:
                meta = await training_ref
            except Exception as exc:  # a failed training fails its own cells only
                self.trainings_left -= 1
                self.trainings_running -= 1
                self.training_ends.pop(target.label, None)
                self._done_with(target)
                self.grow()
                reason = f"training failed: {_short(exc)}"
                self.failures.append({"target": target.label, "stage": "training", "reason": reason})
                self.missing.append({"target": target.label, "stage": "training",
                                     "cells": self.plan.tasks * len(self.config.conditions), "reason": reason})
                log(f"{target.label}: {reason}")
                return
            self.trainings_left -= 1
            self.trainings_running -= 1
            self.training_ends.pop(target.label, None)
            key = "skipped" if meta.skipped else "trained"
            self.stage["training"][key] = self.stage["training"].get(key, 0) + 1
            self.stage["training"]["wall_s"] = max(self.stage["training"]["wall_s"], round(time.time() - started, 2))
        # From here on a failure (registering, a server that never starts) must still give the
        # target's work back, or its server would be kept and grown for cells nobody sends.
        try:
            if target.kind == "adapter":
                t = target.training
                path = str(self.folder / "adapters" / adapter_folder(t.recipe_name, t.seed))
                if meta.method == "partial":  # a full checkpoint is its own server
                    server_key = target.label
                    self.start_server(server_key, path, model.max_model_len)
                    served = (await self.server_info(server_key))["served_name"]
                else:
                    self.grow()  # its GPU may now serve: this target's server may be waiting for one
                    assert server_key is not None, "an adapter's model is served"
                    await self.server_info(server_key)
                    loaded = await self.register(server_key, adapter_alias(t.recipe_name, t.seed), path)
                    served = loaded["served_name"]
                    curve = meta.loss_curve or [float("nan")]
                    log(f"{target.label}: trained (loss {curve[0]:.3f} → {curve[-1]:.3f}), registered as {served}")
            elif target.kind == "base":
                assert server_key is not None, "a base target's model is served"
                served = (await self.server_info(server_key))["served_name"]
            else:
                served, server_key = model.api, None
            generated = await self.generate(target, served, server_key)
        finally:
            self._done_with(target)
        if not generated:
            return
        self.generated.add(target.label)
        await asyncio.gather(self.judge(target), self.probes_after(target))

    async def probes_after(self, target) -> None:
        """The probe battery on every target generated so far, beside this target's judging
        (idempotent: each call adds only the new targets' probes, and redoes the table)."""
        if not self.config.probes or not self.models[target.model_label].base:
            return
        try:
            async with self.probe_lock:
                await self.run_probes()
        except Exception as exc:  # the bench results stand without the probe table
            self.failures.append({"stage": "probes", "target": target.label, "reason": _short(exc)})
            log(f"probes failed: {_short(exc)}")

    async def generate(self, target, served: str, server_key: str | None) -> bool:
        async with self.gate.serving():
            return await self._generate(target, served, server_key)

    async def _generate(self, target, served: str, server_key: str | None) -> bool:
        started = time.time()
        replicas = self._server(server_key).replicas if server_key else []
        handle = replicas[0] if replicas else None
        for attempt in range(1, MAX_GENERATION_ATTEMPTS + 1):
            if server_key:
                await self._on_replicas(target, served, server_key, attempt)
            # The run's own pass: it folds the replicas' shards in, generates what is still missing
            # (on the first replica), and writes the table and manifest.
            server = await self.server_info(server_key) if server_key else None
            request = self.generation_request(target, served, server)
            try:
                summary = await aget(generate_task.options(**self._driver()).remote(request, handle,
                                                                                    api_key=self.api_key))
            except Exception as exc:
                summary = GenerationSummary(request.run, error=_short(exc))
            add_generation_counts(self.counts, summary)
            decision = after_generation(summary, attempt)
            log(f"{target.label}: {decision.message}")
            if decision.action == "retry":
                continue
            if decision.action == "missing":
                self.missing.append({"target": target.label, "stage": "generation", "cells": decision.missing,
                                     "reason": decision.message})
            break
        self.stage["generation"]["wall_s"] = max(self.stage["generation"]["wall_s"], round(time.time() - started, 2))
        return not summary.failed and bool(summary.rows)

    async def _on_replicas(self, target, served: str, key: str, attempt: int) -> None:
        """The target's cells on every replica of ``key`` at once, through one shared queue: a
        driver per replica (one more for each replica started meanwhile), each in its own shard."""
        queue = CellQueue.options(namespace=NAMESPACE).remote()  # type: ignore[attr-defined]
        drivers: dict[asyncio.Future, str] = {}
        done_by: dict[str, dict] = {}
        server_nodes: dict[str, str] = {}
        submitted: set[str] = set()  # drivers whose task runs (the others wait for their replica to start)

        alias = adapter_alias(target.training.recipe_name, target.training.seed) if target.training else None

        async def drive(handle, shard: str) -> GenerationSummary:
            if alias in self.adapter_paths:  # this replica may still be loading it (register)
                await aget(handle.load_adapter.remote(alias, self.adapter_paths[alias]))
            info = await aget(handle.info.remote())
            server_nodes[shard] = info["node"]
            request = self.generation_request(target, served, info)
            submitted.add(shard)
            return await self.on_driver_host(lambda host: host.drive.remote(request, handle, queue, shard))

        started, finished = 0, False
        try:
            while True:
                for handle in [] if finished else self.serving[key].replicas[started:]:
                    shard = f"a{attempt}r{started}"
                    drivers[asyncio.ensure_future(drive(handle, shard))] = shard
                    started += 1
                running = [f for f in drivers if not f.done()]
                if not running:
                    break
                added = asyncio.ensure_future(self.serving[key].added.wait())
                await asyncio.wait([*running, added], return_when=asyncio.FIRST_COMPLETED)
                added.cancel()
                for future in [f for f in running if f.done() and not f.cancelled()]:
                    shard = drivers[future]
                    try:
                        summary = future.result()
                    except Exception as exc:  # the driver died: its leases go to the others
                        released = await aget(queue.release.remote(shard))
                        log(f"{target.label}: driver {shard} failed ({_short(exc)}); {released} cells handed back")
                        continue
                    add_generation_counts(self.counts, summary)
                    done_by[shard] = {"cells": summary.stats.done, "server_node": server_nodes.get(shard),
                                      "driver_node": summary.node}
                if not finished and (await aget(queue.state.remote()))["finished"]:
                    # Every cell is resolved: a replica still starting must not hold the target's end
                    # (its driver has sent nothing; running drivers end on their own, shards closed).
                    finished = True
                    for future, shard in drivers.items():
                        if shard not in submitted:
                            future.cancel()
        finally:
            # On any way out: drivers not yet running are dropped, the queue goes (a running
            # driver's next call to it fails, and its task ends).
            for future in drivers:
                future.cancel()
            ray.kill(queue)
        # Shard "a<attempt>r<replica>": which replica generated how many of the target's cells, where.
        self.stage["generation"].setdefault("replicas", {}).setdefault(target.label, {}).update(done_by)
        if len(done_by) > 1:
            log(f"{target.label}: cells per replica {({s: d['cells'] for s, d in done_by.items()})}")

    async def judge(self, target) -> None:
        started = time.time()
        for judge in self.config.judges:
            for attempt in range(1, 3):
                # Looked up for each pass: a restarted judge server has a new address.
                model, api_base = await self.judge_endpoint(judge)
                request = JudgeRequest(run=str(self.sub_run(target.label)), mode=judge.mode, label=judge.label,
                                       judge_model=model, api_base=api_base, concurrency=judge.concurrency,
                                       bench=self.bench, only_unscored=attempt > 1)
                async with self.gate.serving():
                    summary = await aget(judge_task.options(**self._driver()).remote(request, self.api_key))
                decision = after_judging(summary, attempt)
                if not summary.failed:
                    s = summary.stats
                    self.counts["judge_give_ups"] += s.give_ups
                    self.stage["judging"]["verdicts"] = self.stage["judging"].get("verdicts", 0) + s.judged
                    log(f"{target.label}: judged by {judge.label} ({s.passed} pass, {s.failed} fail, "
                        f"{s.unscored} unscored, {s.calls} calls)")
                if decision.action == "retry":
                    log(f"{target.label}: {decision.message}")
                    continue
                if decision.action == "missing":
                    self.failures.append({"target": target.label, "stage": "judging", "judge": judge.label,
                                          "reason": decision.message})
                    log(f"{target.label}: {decision.message}")
                break
        self.stage["judging"]["wall_s"] = max(self.stage["judging"]["wall_s"], round(time.time() - started, 2))

    async def run_probes(self) -> None:
        """The generality probe battery on every served target (base and its adapters), once
        their bench cells are done, on the same servers and generation path."""
        spec = self.config.probes
        assert spec is not None, "called only for a config with probes"
        started = time.time()
        targets = []
        for target in self.plan.targets:
            model = self.models[target.model_label]
            partial = self._server_key(target) == target.label
            if not model.base or partial or target.label not in self.generated:
                continue  # API rows have no adapters to compare; partial checkpoints serve alone
            info = await self.server_info(model.label)
            sampling = Sampling(max_tokens=spec.max_tokens, repetition_penalty=spec.repetition_penalty)
            common = dict(base_model=info["base_identity"], backend="vllm", sampling=sampling, url=info["api_base"],
                          dtype=info["engine"]["dtype"])
            if target.kind == "base":
                targets.append(Target(target.label, served_name=info["served_name"], **common))
            else:
                t = target.training
                assert t is not None, "an adapter target carries its training"
                alias = adapter_alias(t.recipe_name, t.seed)
                path = self.folder / "adapters" / adapter_folder(t.recipe_name, t.seed)
                served = info["adapters"].get(alias)
                if served:
                    targets.append(Target(target.label, adapter_name=alias, served_name=served,
                                          adapter_hash=inspect_adapter(path).content_hash, **common))
        if not targets:
            return
        judge_model = judge_api = None
        if spec.judge:
            judge_model, judge_api = await self.judge_endpoint(next(j for j in self.config.judges
                                                                      if j.label == spec.judge))
        from harness.probes.job import ProbeRequest

        request = ProbeRequest(run=str(self.folder / "probes"), targets=targets, battery=spec.battery,
                               sampling=targets[0].sampling, judge_model=judge_model, judge_api_base=judge_api,
                               judge_label=spec.judge, concurrency=spec.concurrency)
        log(f"probes: the {spec.battery} battery on {len(targets)} targets")
        async with self.gate.serving():
            summary = await aget(probe_task.options(**self._driver()).remote(request, self.api_key))
        self.stage["probes"] = {"wall_s": round(self.stage.get("probes", {}).get("wall_s", 0) + time.time() - started, 2),
                                "cells": summary.get("cells")}
        log(f"probes: done ({summary.get('cells')} cells)")

    async def execute(self) -> dict:
        pending = [t for t in self.plan.targets if not self._complete(t.label)]
        log(f"plan: {len(self.plan.targets)} targets, {self.plan.cells} cells, {len(self.plan.trainings)} trainings; "
            f"{len(self.plan.targets) - len(pending)} targets already complete")
        if not pending:
            self.merge_and_report()
            return self.finish()
        self.check_nodes()
        keys = self._server_keys(pending)
        # A partially fine-tuned checkpoint is served alone once trained: its slot is planned now.
        partial = [t for t in pending if t.kind == "adapter" and t.training is not None
                   and _recipe_method(t.training.recipe_path) == "partial"]
        # CPU nodes split their cores between the servers' replicas started at once.
        initial = {key: self.fixed_replicas(key) or 1 for key, _, _ in keys}
        self.resources = _resources(sum(initial.values()) + sum(self.fixed_replicas(t.label) or 1 for t in partial),
                                    self.config.resources)
        self.pinned = {self._judge_server(j)[0] for j in self.config.judges if j.serve}
        if self.config.corpus and self.config.corpus.teacher in {key for key, _, _ in keys}:
            self.pinned.add(self.config.corpus.teacher)
        if self.config.probes:
            self.pinned |= {key for key, _, _ in keys}
        self.gpus = ray.cluster_resources().get("GPU", 0.0) if self.resources.gpu else 0.0
        self.gate = TurnGate(self.resources.in_turn)
        # Longest first; among equals a full checkpoint first (its own server starts once it ends).
        trainings = sorted((t for t in pending if t.kind == "adapter"), reverse=True,
                           key=lambda t: (self._training_weight(t), t in partial))
        self.trainings_left = len(trainings)
        for planned in pending:
            key = self._server_key(planned)
            if key is not None:
                self.remaining[key] = self.remaining.get(key, 0.0) + self._work(planned)
        needs_corpus = bool(trainings) and self.config.corpus is not None
        corpus_path = None
        if needs_corpus:
            spec = self.config.corpus
            assert spec is not None, "needs_corpus says so"
            path = Path(spec.path) if Path(spec.path).is_absolute() else self.folder / spec.path
            corpus_path = str(path) if path.is_file() else None
        # Trainings first where their input exists: they hold the longest path.
        refs = {}
        if not needs_corpus or corpus_path:
            self.corpus_done.set()
            refs = {t.label: asyncio.ensure_future(self.train(t, corpus_path)) for t in trainings}
        for key, ref, length in keys:  # declared at once; on a pool their replicas come from grow()
            self.start_server(key, ref, length, grow=False)
        self.grow()
        pipelines = []
        if needs_corpus and not corpus_path:
            corpus_ref = await self.build_corpus()
            refs = {t.label: asyncio.ensure_future(self.train(t, corpus_ref)) for t in trainings}
            pipelines.append(self.run_corpus(corpus_ref))
        pipelines += [self.pipeline(t, refs.get(t.label)) for t in pending]
        gen_started = time.time()
        results = await asyncio.gather(*pipelines, return_exceptions=True)
        # The corpus pipeline (if any) comes first and has no target.
        targets: list[PlannedTarget | None] = [None] * (len(pipelines) - len(pending))
        targets += pending
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                label = target.label if target else "corpus"
                self.failures.append({"target": label, "stage": "pipeline", "reason": _short(result)})
                log(f"{label}: failed: {_short(result)}")
        self.stage["pipelines_wall_s"] = round(time.time() - gen_started, 2)
        for host in self.hosts:
            ray.kill(host)
        self.merge_and_report()
        return self.finish()

    def merge_and_report(self) -> None:

        started = time.time()
        episodes, verdicts = [], []
        for target in self.plan.targets:
            sub = self.sub_run(target.label)
            if (sub / "episodes.parquet").is_file():
                episodes.append(pl.read_parquet(sub / "episodes.parquet"))
            if (sub / "verdicts.parquet").is_file():
                verdicts.append(pl.read_parquet(sub / "verdicts.parquet"))
        if not episodes:
            return
        pl.concat(episodes, how="diagonal_relaxed").write_parquet(self.folder / "episodes.parquet")
        if verdicts:
            pl.concat(verdicts, how="diagonal_relaxed").write_parquet(self.folder / "verdicts.parquet")
        models = {}
        for target in self.plan.targets:
            spec = self.models[target.model_label]
            models[target.label] = {"size": spec.size, "stage": "post" if target.kind == "adapter" else "pre",
                                    "base": spec.base or spec.api}
        update_manifest(self.folder, sweep=self.config.model_dump(), plan=self.plan.describe(), models=models,
                        bench={"spec": self.bench},
                        resources=self.resources.describe() if self.resources else None)
        if verdicts:
            try:
                rendered = render_sweep_report(self.folder, self.config.statistics)
                self.stage["report"] = {"wall_s": round(time.time() - started, 2), **rendered}
                log(f"report: {rendered['report_html']}")
            except Exception as exc:
                self.failures.append({"stage": "report", "reason": _short(exc)})
                log(f"report failed: {_short(exc)}")

    def check_nodes(self) -> None:
        """On several nodes: servers bind their node's address behind a key of this sweep's, and
        every node must see the run folder (adapters are trained on one node, served on another)."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) < 2:
            return
        self.bind_node = True
        self.api_key = secrets.token_urlsafe(32)
        marker = self.folder / f".node-check-{secrets.token_hex(6)}"
        marker.write_text(self.run)
        try:
            refs = {n["NodeManagerAddress"]: see_folder.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(marker), self.run) for n in nodes}
            blind = {}
            for address, ref in refs.items():
                try:
                    problem = ray.get(ref, timeout=120)
                except Exception as exc:  # a node that cannot even run the check cannot take part
                    problem = _short(exc)
                if problem:
                    blind[address] = problem
        finally:
            marker.unlink(missing_ok=True)
        if blind:
            raise SweepRefused(
                f"--out must be on storage every node sees, and {self.folder} is not: "
                + "; ".join(f"node {a}: {why}" for a, why in sorted(blind.items()))
                + ". Mount it on every node (or pass an --out that is) and run again")
        log(f"{len(nodes)} nodes see {self.folder}; servers bind their node's address behind this sweep's API key")

    def finish(self) -> dict:
        for handle in self.retired_handles:  # stopped already, or being stopped: gone either way
            ray.kill(handle, no_restart=True)
        for handle in [h for state in self.serving.values() for h in state.replicas]:
            stop_replica(handle)
        attempt = {
            "run": self.run, "folder": str(self.folder), "started_at": self.started_at,
            "total_wall_s": round(time.time() - self.started, 2), "stages": self.stage, "counts": self.counts,
            "planned_cells": self.plan.cells, "missing": self.missing, "failures": self.failures,
            # The key itself is never written: only that there was one.
            "serving": {"bind": "node address, per-sweep API key" if self.bind_node else HOST,
                        "engine": self.config.engine.kind,
                        "replicas": {key: s.started for key, s in self.serving.items() if s.started}},
            "resources": {"cluster": ray.cluster_resources(), "gpu": _has_gpu(),
                          "declared": self.resources.describe() if self.resources else None},
        }
        file = self.folder / "run.json"
        try:
            previous = json.loads(file.read_text())
        except (OSError, ValueError):
            previous = None
        summary = with_history(previous, attempt)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, file)
        log(f"done in {attempt['total_wall_s']} s; counts: {self.counts}; missing: {self.missing or 'nothing'}; "
            f"run.json written (attempt {summary['attempt']})")
        return summary


def stop_replica(handle, timeout_s: float = 120.0) -> None:
    """Stop a replica's engine (its processes end with it), then its actor, never restarted."""
    try:
        ray.get(handle.stop.remote(), timeout=timeout_s)
    except Exception:  # gone already, or stuck: the kill below ends it either way
        pass
    ray.kill(handle, no_restart=True)


@ray.remote
def see_folder(marker: str, expected: str) -> str | None:
    """On one node: None when it reads ``marker`` as the driver wrote it, else what it saw."""
    try:
        text = Path(marker).read_text()
    except OSError as exc:
        return f"cannot read {marker} ({exc.strerror or exc})"
    return None if text == expected else f"{marker} holds something else: not the same storage"


def render_sweep_report(folder: Path, statistics) -> dict:
    """The sweep's report, with its config's ``statistics`` (a ``StatsSpec``): judges and bootstrap count."""
    from harness.report import render_report

    return render_report(folder, statistics.judge, statistics.judge_b, n_boot=statistics.bootstrap)


class SweepRefused(Exception):
    """The sweep cannot start as asked; the message says what to do instead."""


# Where Ray unpacks a job's --working-dir (Ray 2.x): a copy it deletes when it cleans up.
RAY_WORKING_DIR_COPY = ("runtime_resources", "working_dir_files")


def ephemeral_out(out: Path) -> str | None:
    """Why ``out`` must not hold a run (it resolves inside Ray's temporary copy of the job's
    working dir, where results vanish once Ray cleans up), or None when it may."""
    resolved = out.expanduser().resolve()
    parts = resolved.parts
    for i in range(len(parts) - 1):
        if parts[i:i + 2] == RAY_WORKING_DIR_COPY:
            return (f"--out {out} resolves to {resolved}, inside Ray's temporary copy of the job's working dir, "
                    "which Ray deletes later: pass an absolute --out on storage every node sees, e.g. "
                    "`ray job submit --working-dir . -- python -m jobs.sweep CONFIG --out $PWD/results` "
                    "(`skillsweep run` does this for you)")
    return None


def _recipe_method(recipe_path: str) -> str:
    return load_recipe(recipe_path).method


def _resources(servers: int, config) -> ResourceModel:
    """Declarations for this cluster. On a CPU node the cores partitioned are the ones Ray was
    given (its CPU count), so what is declared always fits what Ray can grant."""
    cluster = ray.cluster_resources()
    cores = cpu_info().cores[: max(1, int(cluster.get("CPU", 1)))]
    uses_gpus = cluster.get("GPU", 0) > 0 and (config.serve_gpus > 0 or config.train_gpus > 0)
    return resource_model(node_cores=cores, gpus=cluster.get("GPU", 0) if uses_gpus else 0, servers=servers,
                          serve_gpus=config.serve_gpus, train_gpus=config.train_gpus, cpu_policy=config.cpu_policy)


def _has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:400]


def main(argv: list[str] | None = None) -> int:
    """Run a sweep on the Ray cluster at ``RAY_ADDRESS``: the Ray job's entry point."""
    parser = argparse.ArgumentParser(description="Run a skillsweep sweep on Ray.")
    parser.add_argument("config")
    parser.add_argument("--run", help="run name (default: the config's name)")
    parser.add_argument("--resume", action="store_true", help="continue an existing run; finished work is skipped")
    parser.add_argument("--out", default=os.environ.get("SKILLSWEEP_RESULTS", "results"),
                        help="results root; give an absolute path (shared storage on a cluster)")
    args = parser.parse_args(argv)
    refused = ephemeral_out(Path(args.out))
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2

    apply_env_defaults()
    ray.init(address=os.environ.get("RAY_ADDRESS"), namespace=NAMESPACE, log_to_driver=True)
    try:
        summary = asyncio.run(Sweep(args.config, Path(args.out), args.run, args.resume).execute())
    except SweepRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return 1 if summary["failures"] and not summary["stages"]["report"].get("report_html") else 0


if __name__ == "__main__":
    sys.exit(main())
