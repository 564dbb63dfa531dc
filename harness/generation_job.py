"""``skillsweep generate``: plan the cells, bring up what serves them, generate, record."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from harness.bench import bench_spec, load_bench
from harness.client import Sampling
from harness.generate import (
    Backend,
    CellSource,
    GenerationStats,
    Progress,
    Reconnect,
    Target,
    generate_hf,
    generate_vllm,
    plan,
)
from harness.models import ResolvedModel, resolve, short_name
from harness.naming import target_label
from harness.progress import DEFAULT_EVERY_S
from harness.prompts import PROMPT_VERSION, condition_names
from harness.provenance import git_commit, package_versions
from harness.runstore import RunStore, run_dir
from serve.adapters import AdapterInfo, inspect_adapter, served_name
from serve.hardware import has_cuda, serving_dtype
from serve.registry import AdapterRegistry
from serve.server import server_record
from serve.serving import Serving, server_spec


@dataclass
class GenerateRequest:
    run: str
    model: str
    adapters: list[tuple[str, Path]] = field(default_factory=list)
    bench: str = "builtin"
    split: str = "eval"
    conditions: list[str] = field(default_factory=lambda: ["baseline", "curated"])
    include_base: bool = True
    url: str | None = None
    backend: Backend = "vllm"
    sampling: Sampling = Sampling(max_tokens=2048, repetition_penalty=1.05)
    concurrency: int = 32
    max_model_len: int = 4096
    label: str | None = None  # the target's label for an 'api' model (default: the model string)
    cpu_bind: str | None = None  # cores for a server this job starts (VLLM_CPU_OMP_THREADS_BIND)
    # The running server's dtype, from whoever started it (a sweep's server actor): a driver on
    # another node has no local record of that server.
    dtype: str | None = None
    progress_every_s: float = DEFAULT_EVERY_S


@dataclass
class GenerationSummary:
    """What ``run_generation`` did; with ``error``, why its task failed before anything was known
    of its cells (the sweep records that rather than a count)."""

    run_dir: str
    stats: GenerationStats = field(default_factory=GenerationStats)
    cells: int = 0
    missing: int = 0  # planned cells with no episode
    rows: int = 0
    regenerated: int = 0
    error: str | None = None
    node: str | None = None  # where the driver ran (a Ray node's address), when it ran on a cluster

    @property
    def failed(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict:
        """As ``skillsweep generate`` prints it."""
        d = {"run_dir": self.run_dir, "stats": self.stats.as_dict(), "cells": self.cells, "missing": self.missing,
             "rows": self.rows, "regenerated": self.regenerated}
        return d | ({"error": self.error} if self.failed else {})


def _targets_on_url(req: GenerateRequest) -> tuple[list[Target], dict]:
    """Generate against a running server; ``req.model`` is a served name there."""
    assert req.url is not None, "the caller checks"
    registry = AdapterRegistry.connect(req.url)
    served = registry.resolve_name(req.model, allow_base=True)
    base_label = registry.base_served_name
    record = server_record(urlparse(registry.url).port) or {"url": req.url}
    dtype = req.dtype or record.get("dtype")
    if served == base_label:
        target = Target(base_label, registry.base.identity, "vllm", req.sampling, url=req.url, served_name=served,
                        dtype=dtype)
    else:
        loaded = next(a for a in registry.list() if a.served_name == served)
        target = Target(target_label(base_label, loaded.alias), registry.base.identity, "vllm", req.sampling,
                        adapter_name=loaded.alias, adapter_hash=inspect_adapter(loaded.path).content_hash,
                        url=req.url, served_name=served, dtype=dtype)
    return [target], {"server": record}


def _targets_local(req: GenerateRequest) -> tuple[list[Target], ResolvedModel, list[AdapterInfo]]:
    """Targets for a model this job serves itself (vLLM) or loads itself (HF). Known before
    anything starts, so a finished run is recognised without starting a server."""
    base = resolve(req.model)
    label = short_name(req.model)
    infos = [inspect_adapter(p) for _, p in req.adapters]
    hf = req.backend == "hf"
    # HF generate runs float32 on CPU (harness.hf_backend); vLLM what the hardware computes natively.
    dtype = ("bfloat16" if has_cuda() else "float32") if hf else serving_dtype()
    targets = []
    if req.include_base or not infos:
        targets.append(Target(label, base.identity, req.backend, req.sampling,
                              served_name=None if hf else label, model_path=base.location, dtype=dtype))
    for (alias, _), info in zip(req.adapters, infos, strict=True):
        targets.append(Target(target_label(label, alias), base.identity, req.backend, req.sampling,
                              adapter_name=alias, adapter_hash=info.content_hash,
                              served_name=None if hf else served_name(alias, info),
                              model_path=base.location, adapter_path=str(info.path), dtype=dtype))
    return targets, base, infos


def _serve(req: GenerateRequest, base, infos, targets: list[Target], stack: ExitStack) -> tuple[list[Target], dict]:
    """Start a server for ``targets``, load their adapters, and point the targets at it."""
    spec = server_spec(base, short_name(req.model), req.adapters, lora_ranks=[i.rank for i in infos],
                       max_model_len=req.max_model_len, dtype=targets[0].dtype or "auto", cpu_bind=req.cpu_bind)
    serving = stack.enter_context(Serving(base, spec))
    preflight = {}
    for loaded, report in serving.load_all(req.adapters):
        assert report is not None, "load_all preflights unless told not to"
        preflight[loaded.served_name] = {"differing": report.differing, "probes": report.probes}
    return [replace(t, url=serving.api_base) for t in targets], {"server": spec.engine_args(), "preflight": preflight}


def _shard_cells(req: GenerateRequest) -> tuple[Path, list, set[str]]:
    """A shard driver's run folder, the run's planned cells on its server, and the cells any
    driver has recorded already (blocking reads: bench, server, journals)."""
    if req.backend != "vllm" or not req.url:
        raise ValueError("shared cells are generated on a running server (a vLLM URL)")
    bench = load_bench(req.bench)
    bench.split(req.split)
    folder = run_dir(req.run)
    targets, _ = _targets_on_url(req)
    cells = plan(bench, req.split, condition_names(req.conditions), targets)
    return folder, cells, RunStore(folder).done_ids_everywhere()


async def generate_shard(req: GenerateRequest, source: CellSource, shard: str, progress: Progress | None = None,
                         reconnect: Reconnect | None = None) -> GenerationSummary:
    """One of several drivers sharing a run's cells (one per replica of a served model at
    ``req.url``), on the caller's event loop, so that one process can run many of them (a sweep's
    driver host): it leases cells from ``source`` and records them in its own ``shard`` journal;
    the run's table and manifest are left to the next plain :func:`run_generation`, which folds
    the shards in (and generates whatever is still missing)."""
    folder, cells, done = await asyncio.to_thread(_shard_cells, req)
    with RunStore(folder).shard(shard) as store:
        stats = await generate_vllm(
            cells, store, folder.name, concurrency=req.concurrency, progress=progress,
            label=f"{req.label or short_name(req.model)} [{shard}]", progress_every_s=req.progress_every_s,
            reconnect=reconnect, source=source, done=done)
        return GenerationSummary(str(folder), stats, cells=len(cells), rows=len(store.done_ids()))


def run_generation(req: GenerateRequest, progress: Progress | None = None, reconnect: Reconnect | None = None,
                   source: CellSource | None = None, shard: str | None = None) -> GenerationSummary:
    """Generate a run's episodes for its targets (vLLM, HF or an API), resuming what is done; returns a summary.

    With ``source`` and ``shard``, this is one of several drivers sharing the run's cells
    (:func:`generate_shard`, on an event loop of its own)."""
    if (source is None) != (shard is None):
        raise ValueError("a shared cell source and a shard go together")
    if source is not None and shard is not None:
        return asyncio.run(generate_shard(req, source, shard, progress=progress, reconnect=reconnect))
    bench = load_bench(req.bench)
    bench.split(req.split)  # an unknown or empty split fails here, before anything starts
    conditions = condition_names(req.conditions)
    folder = run_dir(req.run)
    with ExitStack() as stack:
        # Targets first: an unknown model or an unreachable server leaves no run folder behind.
        if req.backend == "api":
            targets = [Target(req.label or req.model, req.model, "api", req.sampling, served_name=req.model)]
            engine = {"api": {"model": req.model}}
        elif req.url and req.backend == "vllm":
            targets, engine = _targets_on_url(req)
        else:
            targets, base, infos = _targets_local(req)
            engine = {"hf": {"model_path": base.location}} if req.backend == "hf" else {}
        store = stack.enter_context(RunStore(folder))
        # Rows the replicas' drivers left in their shards; a cell two of them generated counts as regenerated.
        shard_duplicates = store.absorb_shards()
        cells = plan(bench, req.split, conditions, targets)
        done = store.done_ids()
        duplicates_before = len(store.rows()) - len(done)
        if req.backend == "hf":
            stats = generate_hf(cells, store, folder.name, progress=progress)
        else:
            if req.backend == "vllm" and not req.url and any(c.id not in done for c in cells):
                targets, engine = _serve(req, base, infos, targets, stack)
                cells = plan(bench, req.split, conditions, targets)
            stats = asyncio.run(generate_vllm(cells, store, folder.name, concurrency=req.concurrency,
                                              progress=progress, label=req.label or short_name(req.model),
                                              progress_every_s=req.progress_every_s, reconnect=reconnect))
        table = store.write_table()
        # Cells generated twice by this call (an episode recorded, then the cell sent again).
        regenerated = len(store.rows()) - len(table) - duplicates_before
        planned = {c.id for c in cells}
        present = set(table.get_column("cell_id").to_list()) if len(table) else set()
        manifest = store.update_manifest(
            git_commit=git_commit(), packages=package_versions(), prompt_version=PROMPT_VERSION,
            bench={"name": bench.name, "spec": bench_spec(req.bench), "hash": bench.content_hash(),
                   "split": req.split},
            conditions=conditions,
            targets={t.label: {k: v for k, v in asdict(t).items() if k != "url"} for t in targets},
            last_generation=stats.as_dict(), missing_cells=sorted(planned - present),
            **({"engine": engine} if engine else {}),
        )
    return GenerationSummary(str(folder), stats, cells=len(cells), missing=len(manifest["missing_cells"]),
                             rows=len(table), regenerated=regenerated + shard_duplicates)
