"""The sweep as a Ray job: ``ray job submit --working-dir . -- python -m jobs.sweep CONFIG``.

One vLLM server actor per base model holds that base's adapters; trainers run as Ray tasks
(``num_gpus`` from the config, 0 on CPU); generation drivers and judge fan-outs run as Ray
tasks against the servers. Pre-SFT cells are generated while adapters train; a finished
adapter is registered with its base's server and its cells start at once; each finished
generation is judged as soon as it lands. Every step is idempotent by cell / verdict /
training id, so ``--resume`` after a crash redoes nothing that finished.

Outputs, under ``OUT/<run>/``: ``runs/<target>/`` (one generation run per target, with its
verdicts), the merged ``episodes.parquet`` / ``verdicts.parquet``, ``manifest.json``,
``stats.json``, ``report.md``, ``report.html`` and plots, and ``run.json`` (timings per stage,
resources, what is missing and why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import ray

NAMESPACE = "skillsweep"


def log(message: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------ Ray workers

@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=0)
class ServerActor:
    """A vLLM server for one base model (or one fully fine-tuned checkpoint)."""

    def __init__(self, model_ref: str, served_name: str, max_model_len: int, kv_cache_gib: int,
                 max_lora_rank: int, max_loras: int):
        from harness.models import resolve
        from serve.server import COMPACT_JSON_ARGS, ServerSpec, VLLMServer

        self.base = resolve(model_ref)
        self.served_name = served_name
        self.spec = ServerSpec(model=self.base.location, served_name=served_name, enable_lora=True,
                               max_lora_rank=max_lora_rank, max_loras=max_loras, max_model_len=max_model_len,
                               kv_cache_gib=kv_cache_gib, extra_args=COMPACT_JSON_ARGS)
        self.server = VLLMServer(self.spec, base_identity=self.base.identity).start()

    def info(self) -> dict:
        return {"url": self.server.base_url, "api_base": self.server.api_base, "served_name": self.served_name,
                "actor_pid": os.getpid(), "engine": self.spec.engine_args(), "base_identity": self.base.identity}

    def load_adapter(self, alias: str, path: str) -> dict:
        from serve.registry import AdapterRegistry

        registry = AdapterRegistry(self.server.api_base, self.base, self.served_name, self.spec.max_lora_rank)
        loaded, report = registry.load(alias, path)
        return {"served_name": loaded.served_name, "preflight_differing": report.differing,
                "preflight_probes": report.probes}

    def stop(self) -> None:
        self.server.stop()


@ray.remote(num_cpus=0)
def train_task(recipe_path: str, seed: int, out: str, model: str, corpus: str | None) -> dict:
    from train.recipe import load_recipe
    from train.trainer import train_one

    meta_file = Path(out) / "training_meta.json"
    recipe = load_recipe(recipe_path)
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("recipe") == recipe.model_dump() and meta.get("seed") == seed:
            return {**meta, "skipped": True}
    return {**train_one(recipe, seed, Path(out), model=model, corpus=corpus), "skipped": False}


@ray.remote(num_cpus=0)
def generate_task(request: dict) -> dict:
    from harness.client import Sampling
    from harness.generation_job import GenerateRequest, run_generation

    request = dict(request, sampling=Sampling(**request["sampling"]))
    return run_generation(GenerateRequest(**request))


@ray.remote(num_cpus=0)
def judge_task(run: str, judges: list[dict], bench: str) -> list[dict]:
    """Every judge over one target's run, in turn: they share its verdict table."""
    from harness.judging.job import JudgeRequest, run_judging

    out = []
    for j in judges:
        try:
            out.append(run_judging(JudgeRequest(run=run, bench=bench, **j)))
        except Exception as exc:  # one judge failing leaves the others' verdicts standing
            out.append({"label": j["label"], "error": _short(exc)})
    return out


@ray.remote(num_cpus=0)
def corpus_task(teacher: str, teacher_url: str | None, out: str, bench: str, judge: str | None,
                judge_api_base: str | None, mode: str, max_tokens: int) -> dict:
    from harness.client import Sampling
    from train.corpus import CorpusRequest, build_corpus

    return build_corpus(CorpusRequest(teacher=teacher, teacher_url=teacher_url, out=Path(out), bench=bench,
                                      judge=judge, judge_api_base=judge_api_base, mode=mode,
                                      sampling=Sampling(max_tokens=max_tokens)))


# ------------------------------------------------------------------ the driver

class Sweep:
    def __init__(self, config_path: str, out_root: Path, run: str | None, resume: bool):
        from harness.sweep_config import load_config, make_plan

        self.config = load_config(config_path)
        self.plan = make_plan(self.config)
        self.run = run or self.config.name
        self.folder = (out_root / self.run).resolve()
        if self.folder.exists() and any(self.folder.iterdir()) and not resume:
            raise SystemExit(f"{self.folder} exists: pass --resume to continue it, or --run NAME for a new run")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.bench = self.config.bench if self.config.bench == "builtin" else str(Path(self.config.bench).resolve())
        self.servers: dict[str, ray.actor.ActorHandle] = {}
        self.loaded: dict[str, dict[str, str]] = {}  # server key -> alias -> adapter path (re-registered on restart)
        self.stage = {name: {"wall_s": 0.0} for name in ("corpus", "training", "generation", "judging", "report")}
        self.missing: list[dict] = []
        self.failures: list[dict] = []
        self.started = time.time()

    # -- helpers
    def sub_run(self, label: str) -> Path:
        return self.folder / "runs" / label

    def _complete(self, label: str) -> bool:
        """Generated and judged by every judge: nothing to do for this target on resume."""
        import polars as pl

        sub = self.sub_run(label)
        try:
            manifest = json.loads((sub / "manifest.json").read_text())
            episodes = pl.read_parquet(sub / "episodes.parquet")
            verdicts = pl.read_parquet(sub / "verdicts.parquet")
        except Exception:  # anything missing or unreadable: not complete, do the work
            return False
        expected = self.plan.tasks * len(self.config.conditions)
        if manifest.get("missing_cells") or len(episodes) != expected:
            return False
        counts = verdicts.group_by("judge_label").len()
        have = dict(zip(counts["judge_label"], counts["len"]))
        return all(have.get(j.label) == expected for j in self.config.judges)

    def _lora_limits(self, model_label: str) -> tuple[int, int]:
        from serve.adapters import VLLM_LORA_RANKS
        from train.recipe import load_recipe

        recipes = [load_recipe(t.recipe_path) for t in self.plan.trainings if t.model_label == model_label]
        ranks = [r.lora.r for r in recipes if r.method == "lora"] or [8]
        rank = next(r for r in VLLM_LORA_RANKS if r >= max(ranks))
        return rank, max(1, len(recipes))

    def server(self, key: str, model_ref: str, max_model_len: int) -> ray.actor.ActorHandle:
        if key not in self.servers:
            rank, slots = self._lora_limits(key)
            gpus = self.config.resources.serve_gpus if _has_gpu() else 0
            self.servers[key] = ServerActor.options(
                name=f"server:{self.run}:{key}", namespace=NAMESPACE, num_gpus=gpus,
            ).remote(model_ref, key, max_model_len, self.config.resources.kv_cache_gib, rank, slots)
            self.loaded[key] = {}
        return self.servers[key]

    def server_info(self, key: str) -> dict:
        """The server's address, re-registering its adapters if the actor was restarted."""
        info = ray.get(self.servers[key].info.remote())
        known = self.loaded[key]
        if known and info["actor_pid"] != known.get("__pid__"):
            for alias, path in list(known.items()):
                if alias != "__pid__":
                    ray.get(self.servers[key].load_adapter.remote(alias, path))
                    log(f"re-registered adapter {alias} on restarted server {key}")
        known["__pid__"] = info["actor_pid"]
        return info

    def _judge_endpoint(self, judge) -> tuple[str | None, str | None]:
        if judge.serve:
            model = next((m for m in self.config.models if m.base == judge.serve), None)
            key = model.label if model else f"judge-{judge.label}"
            self.server(key, judge.serve, model.max_model_len if model else 4096)
            info = self.server_info(key)
            return f"hosted_vllm/{info['served_name']}", info["api_base"]
        return judge.model, judge.api_base

    # -- stages
    def build_corpus(self) -> str | None:
        spec = self.config.corpus
        if spec is None:
            return None
        path = Path(spec.path) if Path(spec.path).is_absolute() else self.folder / spec.path
        if path.is_file():
            return str(path)
        started = time.time()
        teacher_model = next((m for m in self.config.models if m.label == spec.teacher and m.base), None)
        teacher_url, teacher = None, spec.teacher
        if teacher_model:
            info = self.server_info_for_model(teacher_model)
            teacher_url, teacher = info["url"], info["served_name"]
        judge = next((j for j in self.config.judges if j.label == spec.judge), None)
        judge_model, judge_api = self._judge_endpoint(judge) if judge else (None, None)
        log(f"corpus: tracing the train split with teacher {spec.teacher}")
        summary = ray.get(corpus_task.remote(teacher, teacher_url, str(path), self.bench, judge_model, judge_api,
                                             judge.mode if judge else "deterministic", spec.max_tokens))
        log(f"corpus: kept {summary['rows']} of {summary['traces']} traces → {path}")
        self.stage["corpus"] = {"wall_s": round(time.time() - started, 2), **summary}
        return str(path)

    def server_info_for_model(self, model) -> dict:
        self.server(model.label, model.base, model.max_model_len)
        return self.server_info(model.label)

    def generation_request(self, target, info: dict | None, served: str) -> dict:
        g = target.generation
        request = {"run": str(self.sub_run(target.label)), "model": served, "bench": self.bench,
                   "split": self.config.split, "conditions": list(self.config.conditions),
                   "sampling": {"max_tokens": g.max_tokens, "repetition_penalty": g.repetition_penalty},
                   "concurrency": g.concurrency}
        if info is None:
            return {**request, "backend": "api", "label": target.label}
        return {**request, "url": info["url"]}

    def execute(self) -> dict:
        pending_targets = [t for t in self.plan.targets if not self._complete(t.label)]
        log(f"plan: {len(self.plan.targets)} targets, {self.plan.cells} cells, {len(self.plan.trainings)} trainings; "
            f"{len(self.plan.targets) - len(pending_targets)} targets already complete")
        if not pending_targets:
            self.merge_and_report()
            return self.finish()
        models = {m.label: m for m in self.config.models}
        needs_corpus = any(t.training for t in pending_targets)
        corpus = self.build_corpus() if needs_corpus else None

        generation: dict = {}  # object ref -> target
        judging: dict = {}
        gen_started = time.time()
        # Pre-SFT and API targets start now, while adapters train.
        for target in pending_targets:
            if target.kind == "api":
                generation[generate_task.remote(self.generation_request(target, None, models[target.model_label].api))] = target
            elif target.kind == "base":
                info = self.server_info_for_model(models[target.model_label])
                generation[generate_task.remote(self.generation_request(target, info, info["served_name"]))] = target
        training: dict = {}
        train_started = time.time()
        for target in pending_targets:
            if target.kind != "adapter":
                continue
            t = target.training
            out = self.folder / "adapters" / f"{t.recipe_name}-s{t.seed}"
            gpus = self.config.resources.train_gpus if _has_gpu() else 0
            training[train_task.options(num_gpus=gpus).remote(t.recipe_path, t.seed, str(out), t.base, corpus)] = target
        trained = skipped = 0
        attempts: dict[str, int] = {}
        while training or generation or judging:
            ready, _ = ray.wait(list(training) + list(generation) + list(judging), num_returns=1)
            ref = ready[0]
            if ref in training:
                target = training.pop(ref)
                try:
                    meta = ray.get(ref)
                except Exception as exc:  # a failed training fails its own cells only
                    reason = f"training failed: {_short(exc)}"
                    self.failures.append({"target": target.label, "stage": "training", "reason": reason})
                    log(f"{target.label}: {reason}")
                    continue
                trained += not meta.get("skipped")
                skipped += bool(meta.get("skipped"))
                if not training:
                    self.stage["training"] = {"wall_s": round(time.time() - train_started, 2), "trained": trained,
                                              "skipped": skipped, "failed": len([f for f in self.failures
                                                                                  if f["stage"] == "training"])}
                path = str(self.folder / "adapters" / f"{target.training.recipe_name}-s{target.training.seed}")
                alias = f"{target.training.recipe_name}@s{target.training.seed}"
                key = target.model_label
                if meta["method"] == "partial":  # a full checkpoint is its own server
                    key = target.label
                    self.server(key, path, models[target.model_label].max_model_len)
                    info = self.server_info(key)
                    served = info["served_name"]
                else:
                    info = self.server_info_for_model(models[key])
                    loaded = ray.get(self.servers[key].load_adapter.remote(alias, path))
                    self.loaded[key][alias] = path
                    served = loaded["served_name"]
                    log(f"{target.label}: trained (loss {meta['loss_curve'][0]:.3f} → {meta['loss_curve'][-1]:.3f}), "
                        f"registered as {served}")
                generation[generate_task.remote(self.generation_request(target, info, served))] = target
            elif ref in generation:
                target = generation.pop(ref)
                try:
                    summary = ray.get(ref)
                except Exception as exc:
                    summary = {"missing": -1, "error": _short(exc)}
                attempts[target.label] = attempts.get(target.label, 0) + 1
                if summary.get("missing") and attempts[target.label] < 3:
                    # A server that died mid-generation has been restarted by Ray: re-register and retry.
                    log(f"{target.label}: {summary.get('missing')} cells missing ({summary.get('error', 'server errors')});"
                        " retrying on the (restarted) server")
                    generation[self._retry(target, models)] = target
                    continue
                log(f"{target.label}: generation done ({summary.get('rows', 0)} episodes, {summary.get('missing')} missing)")
                if summary.get("missing"):
                    self.missing.append({"target": target.label, "stage": "generation", "cells": summary.get("missing"),
                                         "reason": summary.get("error") or "generation failed after retries"})
                judges = []
                for judge in self.config.judges:
                    model, api_base = self._judge_endpoint(judge)
                    judges.append({"label": judge.label, "mode": judge.mode, "judge_model": model,
                                   "api_base": api_base, "concurrency": judge.concurrency})
                judging[judge_task.remote(str(self.sub_run(target.label)), judges, self.bench)] = target
                if not generation and not training:
                    self.stage["generation"]["wall_s"] = round(time.time() - gen_started, 2)
            else:
                target = judging.pop(ref)
                for summary in ray.get(ref):
                    if "error" in summary:
                        self.failures.append({"target": target.label, "stage": "judging", "judge": summary["label"],
                                              "reason": summary["error"]})
                        log(f"{target.label}: judge {summary['label']} failed: {summary['error']}")
                        continue
                    stats = summary["stats"]
                    log(f"{target.label}: judged by {summary['label']} ({stats['passed']} pass, {stats['failed']} fail, "
                        f"{stats['unscored']} unscored, {stats['calls']} calls)")
                    self.stage["judging"]["verdicts"] = self.stage["judging"].get("verdicts", 0) + stats["judged"]
        self.stage["judging"]["wall_s"] = round(time.time() - gen_started, 2)
        for target in self.plan.targets:
            failed = [f for f in self.failures if f.get("target") == target.label and f["stage"] == "training"]
            if failed:
                self.missing.append({"target": target.label, "stage": "training",
                                     "cells": self.plan.tasks * len(self.config.conditions), "reason": failed[0]["reason"]})
        self.merge_and_report()
        return self.finish()

    def _retry(self, target, models):
        if target.kind == "api":
            return generate_task.remote(self.generation_request(target, None, models[target.model_label].api))
        key = target.label if target.label in self.servers else target.model_label
        info = self.server_info(key)
        served = info["served_name"]
        if target.kind == "adapter" and key == target.model_label:
            alias = f"{target.training.recipe_name}@s{target.training.seed}"
            served = ray.get(self.servers[key].load_adapter.remote(alias, self.loaded[key][alias]))["served_name"]
        return generate_task.remote(self.generation_request(target, info, served))

    def merge_and_report(self) -> None:
        import polars as pl

        from harness.report import render_report
        from harness.runstore import update_manifest

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
            spec = next(m for m in self.config.models if m.label == target.model_label)
            models[target.label] = {"size": spec.size, "stage": "post" if target.kind == "adapter" else "pre",
                                    "base": spec.base or spec.api}
        update_manifest(self.folder, sweep=self.config.model_dump(), plan=self.plan.describe(), models=models,
                        bench={"spec": self.bench})
        if verdicts:
            stats = self.config.statistics
            try:
                rendered = render_report(self.folder, stats.judge, stats.judge_b)
                self.stage["report"] = {"wall_s": round(time.time() - started, 2), **rendered}
                log(f"report: {rendered['report_html']}")
            except Exception as exc:
                self.failures.append({"stage": "report", "reason": _short(exc)})
                log(f"report failed: {_short(exc)}")

    def finish(self) -> dict:
        for handle in self.servers.values():
            try:
                ray.get(handle.stop.remote(), timeout=120)
            except Exception:
                pass
            ray.kill(handle, no_restart=True)
        summary = {
            "run": self.run, "folder": str(self.folder), "total_wall_s": round(time.time() - self.started, 2),
            "stages": self.stage, "planned_cells": self.plan.cells, "missing": self.missing, "failures": self.failures,
            "resources": {"cluster": ray.cluster_resources(), "gpu": _has_gpu()},
        }
        (self.folder / "run.json").write_text(json.dumps(summary, indent=2, default=str))
        log(f"done in {summary['total_wall_s']} s; missing: {self.missing or 'nothing'}; run.json written")
        return summary


def _has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:400]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a skillsweep sweep on Ray.")
    parser.add_argument("config")
    parser.add_argument("--run", help="run name (default: the config's name)")
    parser.add_argument("--resume", action="store_true", help="continue an existing run; finished work is skipped")
    parser.add_argument("--out", default=os.environ.get("SKILLSWEEP_RESULTS", "results"),
                        help="results root; give an absolute path (shared storage on a cluster)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=os.environ.get("RAY_ADDRESS"), namespace=NAMESPACE, log_to_driver=True)
    try:
        summary = Sweep(args.config, Path(args.out), args.run, args.resume).execute()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        return 1
    return 1 if summary["failures"] and not summary["stages"]["report"].get("report_html") else 0


if __name__ == "__main__":
    sys.exit(main())
