"""Sweep configs: one YAML describes a whole experiment, validated with the field named.

A sweep has a bench, models (each a served base with adapters from recipes and seeds, or an
API model as a reference row), conditions, generation settings per model, judges, statistics
options and resources. :func:`make_plan` turns it into servers, trainings and targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.bench import Bench, load_bench
from harness.errors import SkillsweepError
from harness.judging.verdict import Mode
from harness.models import ModelNotFound, check_reference
from harness.naming import adapter_alias, target_label
from harness.probes.battery import load_battery
from harness.prompts import condition_names
from harness.yaml_models import Seeds, beside, load_yaml_model
from train.recipe import load_recipe


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Generation(_Strict):
    max_tokens: int = Field(2048, ge=1)
    repetition_penalty: float | None = 1.05
    concurrency: int = Field(32, ge=1)


class AdapterSpec(_Strict):
    recipe: str
    seeds: Seeds | None = Field(None, min_length=1)
    generation: Generation | None = None  # post-SFT settings (the study used 1024)


class ModelSpec(_Strict):
    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: str | None = None  # served on vLLM: local:<name>, a path, or a hub id
    api: str | None = None  # a reference row through litellm, e.g. anthropic/claude-haiku-4-5
    size: str | None = None
    include_base: bool = True
    generation: Generation = Generation()
    adapters: list[AdapterSpec] = []
    max_model_len: int = 4096
    # Server replicas of this base (each holding every adapter of it); unset: resources.replicas.
    replicas: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.base is None) == (self.api is None):
            raise ValueError("set exactly one of 'base' (served) or 'api' (litellm reference model)")
        if self.api and self.adapters:
            raise ValueError("an 'api' model cannot have adapters")
        if self.base and not self.include_base and not self.adapters:
            raise ValueError("include_base is false and there are no adapters: nothing to generate")
        return self


class JudgeSpec(_Strict):
    label: str
    mode: Mode
    model: str | None = None  # litellm model string
    serve: str | None = None  # or a model reference the sweep serves itself as the judge
    api_base: str | None = None
    concurrency: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _needs_model(self):
        if self.mode != Mode.DETERMINISTIC and not (self.model or self.serve):
            raise ValueError(f"judge {self.label!r} in mode {self.mode} needs 'model' or 'serve'")
        return self


class CorpusSpec(_Strict):
    path: str
    teacher: str | None = None  # a model label of this sweep (served) or a litellm model string
    judge: str | None = None  # a judge label of this sweep
    max_tokens: int = 1024


class StatsSpec(_Strict):
    judge: str | None = None
    judge_b: str | None = None
    bootstrap: int = Field(10_000, ge=100)


class ProbesSpec(_Strict):
    """The generality probe battery, run on every served target (base and adapters)."""

    battery: str = "builtin"  # or a probes JSONL file
    judge: str | None = None  # a judge label of this sweep (an LLM judge) for factual references and tricks
    max_tokens: int = Field(256, ge=1)
    repetition_penalty: float | None = 1.05
    concurrency: int = Field(32, ge=1)


class Resources(_Strict):
    train_gpus: float = Field(1.0, ge=0)
    serve_gpus: float = Field(1.0, ge=0)
    kv_cache_gib: int = Field(2, ge=1)
    # CPU-only nodes: serving and training take every core in turn, or split the cores and
    # overlap (jobs/resources.py; the README has the measurements behind the default).
    cpu_policy: Literal["in-turn", "partition"] = "in-turn"
    # Replicas of every served base: a number, or unset for the rule in jobs/replicas.py (one per
    # base, more from GPUs no training needs, and more as trainings end).
    replicas: int | None = Field(None, ge=1)


class EngineSpec(_Strict):
    """What serves the models: vLLM, or the simulated engine (serve/sim_engine.py) modelling a GPU
    class, with trainings simulated too (train/sim_training.py); ``time_scale`` is wall seconds per
    simulated second."""

    kind: Literal["vllm", "sim"] = "vllm"
    gpu: str = "h100"
    time_scale: float = Field(1.0, gt=0)


class SweepConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    bench: str = "builtin"
    split: Literal["eval", "train", "all"] = "eval"
    conditions: list[str] = ["baseline", "curated"]
    models: list[ModelSpec] = Field(min_length=1)
    judges: list[JudgeSpec] = Field(min_length=1)
    corpus: CorpusSpec | None = None
    statistics: StatsSpec = StatsSpec()
    resources: Resources = Resources()
    probes: ProbesSpec | None = None
    engine: EngineSpec = EngineSpec()

    @model_validator(mode="after")
    def _references(self):
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model labels must be unique: {labels}")
        judges = [j.label for j in self.judges]
        if len(set(judges)) != len(judges):
            raise ValueError(f"judge labels must be unique: {judges}")
        for name in ("judge", "judge_b"):
            chosen = getattr(self.statistics, name)
            if chosen and chosen not in judges:
                raise ValueError(f"statistics.{name} {chosen!r} is not a judge label ({judges})")
        if self.corpus and self.corpus.judge and self.corpus.judge not in judges:
            raise ValueError(f"corpus.judge {self.corpus.judge!r} is not a judge label ({judges})")
        if self.probes and self.probes.judge:
            judge = next((j for j in self.judges if j.label == self.probes.judge), None)
            if judge is None or judge.mode == Mode.DETERMINISTIC:
                raise ValueError(f"probes.judge {self.probes.judge!r} is not an LLM judge label of this sweep "
                                 f"({[j.label for j in self.judges if j.mode != 'deterministic']})")
        return self


class ConfigError(SkillsweepError, ValueError):
    pass


def _model_ref(path: Path, ref: str) -> str:
    """A model reference as written, or a checkpoint folder beside the config; checked offline."""
    if not ref.startswith("local:") and Path(beside(path, ref)).exists():
        ref = beside(path, ref)
    check_reference(ref)
    return ref


def load_config(path: str | Path) -> SweepConfig:
    """A sweep config, checked as far as can be without a GPU or a network: conditions,
    recipes, model references, the bench and its split, and that the plan has cells. Paths in
    it are resolved relative to the file."""
    path = Path(path)
    config = load_yaml_model(path, SweepConfig, ConfigError, "config")

    def at(field: str, check, *args):
        try:
            return check(*args)
        except (ValueError, ModelNotFound) as exc:
            raise ConfigError(f"{path}, field '{field}': {exc}") from None

    at("conditions", condition_names, config.conditions)
    if config.bench != "builtin":
        config.bench = beside(path, config.bench)
    if config.probes:
        at("probes.battery", load_battery, config.probes.battery)
    for i, model in enumerate(config.models):
        for j, adapter in enumerate(model.adapters):
            adapter.recipe = beside(path, adapter.recipe)
            at(f"models.{i}.adapters.{j}.recipe", load_recipe, adapter.recipe)
        if model.base:
            model.base = at(f"models.{i}.base", _model_ref, path, model.base)
    for i, judge in enumerate(config.judges):
        if judge.serve:
            judge.serve = at(f"judges.{i}.serve", _model_ref, path, judge.serve)
    bench = at("bench", load_bench, config.bench)
    at("split", bench.split, config.split)
    labels = [t.label for t in make_plan(config, bench).targets]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"{path}, field 'models': targets {', '.join(repeated)} are planned more than once "
                          "(the same recipe and seed twice)")
    return config


@dataclass(frozen=True)
class Training:
    model_label: str
    base: str
    recipe_path: str
    recipe_name: str
    seed: int
    target_label: str
    generation: Generation


@dataclass(frozen=True)
class PlannedTarget:
    label: str
    model_label: str
    kind: Literal["base", "adapter", "api"]
    generation: Generation
    training: Training | None = None


@dataclass(frozen=True)
class Plan:
    config: SweepConfig
    servers: list[ModelSpec]
    judge_servers: list[JudgeSpec]
    trainings: list[Training]
    targets: list[PlannedTarget]
    tasks: int

    @property
    def cells(self) -> int:
        return len(self.targets) * self.tasks * len(self.config.conditions)

    def describe(self) -> dict:
        return {
            "sweep": self.config.name, "bench": self.config.bench, "split": self.config.split,
            "tasks": self.tasks, "conditions": self.config.conditions, "cells": self.cells,
            "servers": [{"model": m.label, "base": m.base, "size": m.size,
                         "adapters": [t.target_label for t in self.trainings if t.model_label == m.label]}
                        for m in self.servers] + [{"judge": j.label, "serves": j.serve} for j in self.judge_servers],
            "trainings": [{"target": t.target_label, "recipe": t.recipe_name, "seed": t.seed, "base": t.base}
                          for t in self.trainings],
            "targets": [{"label": t.label, "kind": t.kind, "max_tokens": t.generation.max_tokens}
                        for t in self.targets],
            "judges": [{"label": j.label, "mode": j.mode, "model": j.model or j.serve} for j in self.config.judges],
            "verdicts": self.cells * len(self.config.judges),
        }


def make_plan(config: SweepConfig, bench: Bench | None = None) -> Plan:
    """A sweep config's plan: its trainings, its targets, and the cells each generates."""
    tasks = len((bench or load_bench(config.bench)).split(config.split))
    trainings, targets = [], []
    for model in config.models:
        if model.api:
            targets.append(PlannedTarget(model.label, model.label, "api", model.generation))
            continue
        assert model.base is not None, "ModelSpec sets exactly one of base and api"
        if model.include_base:
            targets.append(PlannedTarget(model.label, model.label, "base", model.generation))
        for adapter in model.adapters:
            recipe = load_recipe(adapter.recipe)
            for seed in adapter.seeds or recipe.seeds:
                label = target_label(model.label, adapter_alias(recipe.name, seed))
                training = Training(model.label, model.base, adapter.recipe, recipe.name, seed, label,
                                    adapter.generation or model.generation)
                trainings.append(training)
                targets.append(PlannedTarget(label, model.label, "adapter", training.generation, training))
    return Plan(config, [m for m in config.models if m.base], [j for j in config.judges if j.serve],
                trainings, targets, tasks)
