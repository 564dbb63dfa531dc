"""``skillsweep bench author``: declarative skills → a native bench, through a litellm teacher.

Stages per skill: a procedural rewrite (s2 in the study), then N tasks (s3), each with a query
type drawn from a configured mix. Every teacher call is one *unit*, identified by its stage,
skill, task index, prompt hash, reply schema and teacher; finished units are journalled
(``authoring.jsonl``, flushed per row), so a re-run reuses them and calls the teacher only for
what is missing or failed. Replies are schema-constrained where the provider supports it and
parsed tolerantly and validated anyway; an invalid or truncated reply is retried (another
seed) up to ``max_attempts`` times, then the unit is reported as failed, never written as a
task. The split is seeded and by uid, decided before any removal; near-duplicate tasks
(MinHash) are reported and removed, the train member losing to the eval one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from harness.authoring.dedup import NUM_PERM, SHINGLE, near_duplicates
from harness.authoring.schema import (
    ANSWER_RULES,
    DIFFICULTIES,
    REWRITE_SCHEMA,
    DeclarativeSkill,
    RewriteReply,
    TaskReply,
    check_answer,
    schema_hash,
    task_schema,
)
from harness.authoring.templates import load_prompt
from harness.bench.load import load_native, unique_records, write_native
from harness.bench.model import Bench, QueryType, Skill, Task
from harness.client import Sampling, _request
from harness.judging.job import require_credentials
from harness.judging.llm_judge import UnparseableReply, parse_json_reply
from harness.libenv import quiet_litellm
from harness.prompts import prompt_hash, skill_block
from harness.provenance import git_commit, package_versions
from harness.retry import AdaptiveLimiter, CallFailed, FanoutCounters, RetryPolicy, call_with_retries
from harness.runstore import RunStore, update_manifest

REWRITE_PROMPT = "rewrite-v1"
TASKS_PROMPT = "tasks-v1"
# The study's s3 mix (600 tasks): YES_NO 61%, FREE_FORM 16.5%, SINGLE_WORD 11.5%, RANKING 11%.
STUDY_MIX = {"YES_NO": 0.61, "FREE_FORM": 0.165, "SINGLE_WORD": 0.115, "RANKING": 0.11}
# Retries of a greedy teacher sample at this temperature: greedy would repeat the bad reply.
RETRY_TEMPERATURE = 0.7


@dataclass
class AuthorRequest:
    skills_file: Path
    out: Path
    teacher: str  # a litellm model string, or with teacher_url a served name there
    teacher_url: str | None = None
    tasks_per_skill: int = 15
    mix: dict[str, float] = field(default_factory=lambda: dict(STUDY_MIX))
    eval_fraction: float = 1 / 3
    seed: int = 0
    temperature: float = 0.7
    max_tokens: int = 2048
    concurrency: int = 16
    max_attempts: int = 3  # replies per unit that may fail to parse or validate
    # Send seed (+ attempt) with each request, for reproducible sampling. vLLM's CPU build
    # crashes on seeded sampling at temperature > 0 under chunked prefill: turn off there.
    sampling_seed: bool = True
    policy: RetryPolicy = field(default_factory=RetryPolicy)  # transport retries per reply
    json_schema: bool = True
    dedup_threshold: float = 0.8
    trap_every: int = 3  # tasks without a trap: every trap_every-th one (so two in three carry a trap)
    name: str | None = None


@dataclass(frozen=True)
class Unit:
    id: str
    stage: Literal["rewrite", "task"]
    skill: str
    index: int | None
    query_type: str | None
    prompt_version: str
    prompt_hash: str
    schema: dict
    messages: tuple[dict, ...]


@dataclass
class AuthorStats:
    units: int = 0
    reused: int = 0
    called: int = 0
    ok: int = 0
    failed: int = 0
    retried_units: int = 0
    invalid_replies: int = 0
    truncated_replies: int = 0
    fanout: FanoutCounters = field(default_factory=FanoutCounters)

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "fanout"}
        return d | {"calls": self.fanout.calls, "transport_retries": dict(self.fanout.retries)}


def allocate_query_types(total: int, mix: dict[str, float], seed: int) -> list[QueryType]:
    """``total`` query types in the mix's proportions (largest remainder), in a seeded order."""
    if not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"query-type mix {mix!r}: needs non-negative weights with a positive sum")
    types = {QueryType(k): w / sum(mix.values()) for k, w in mix.items()}
    counts = {t: int(total * w) for t, w in types.items()}
    by_remainder = sorted(types, key=lambda t: -(total * types[t] - counts[t]))
    for t in by_remainder[: total - sum(counts.values())]:
        counts[t] += 1
    out = [t for t in types for _ in range(counts[t])]
    random.Random(f"mix:{seed}").shuffle(out)
    return out


def parse_mix(spec: str) -> dict[str, float]:
    """``YES_NO=0.61,FREE_FORM=0.165,...``"""
    mix = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        try:
            QueryType(key.strip())
            mix[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--mix {part!r}: expected QUERY_TYPE=WEIGHT with a type among "
                             f"{', '.join(q.value for q in QueryType)}") from None
        if not sep:
            raise ValueError(f"--mix {part!r}: expected QUERY_TYPE=WEIGHT")
    return mix


def task_uid(skill: str, index: int) -> str:
    """The uid of a skill's ``index``-th authored task (counted from 1 in the uid)."""
    return f"{skill}-t{index + 1:02d}"


def split_of(skill: str, n: int, eval_fraction: float, seed: int) -> dict[str, str]:
    """A seeded split of a skill's planned task uids: decided by uid only, so a task's split
    does not move when another task fails or is removed."""
    uids = sorted((task_uid(skill, i) for i in range(n)),
                  key=lambda u: hashlib.sha256(f"split:{seed}:{u}".encode()).hexdigest())
    n_eval = round(n * eval_fraction)
    if n >= 2:
        n_eval = min(max(n_eval, 1), n - 1)
    return {u: ("eval" if i < n_eval else "train") for i, u in enumerate(uids)}


def _unit(stage: Literal["rewrite", "task"], skill: str, index: int | None, query_type: str | None, prompt,
          schema: dict, messages: list[dict], teacher: str) -> Unit:
    p_hash = prompt_hash(messages)
    key = [stage, skill, index, p_hash, schema_hash(schema), teacher]
    uid = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return Unit(uid, stage, skill, index, query_type, prompt.version, p_hash, schema, tuple(messages))


def load_declarative(file: Path) -> list[DeclarativeSkill]:
    """The declarative skills to author tasks for, one per name."""
    return unique_records(file, DeclarativeSkill, "name", "skill")


class Author:
    def __init__(self, req: AuthorRequest, store: RunStore):
        self.req, self.store = req, store
        self.rewrite_prompt = load_prompt(REWRITE_PROMPT)
        self.tasks_prompt = load_prompt(TASKS_PROMPT)
        self.stats = AuthorStats()
        self.limiter = AdaptiveLimiter(req.concurrency)
        self.done = {k: r for k, r in store.latest().items() if r["status"] == "ok"}
        self.failures: list[dict] = []

    # -- units
    def rewrite_unit(self, skill: DeclarativeSkill) -> Unit:
        messages = self.rewrite_prompt.messages(name=skill.name, category=skill.category,
                                                description=skill.description)
        return _unit("rewrite", skill.name, None, None, self.rewrite_prompt, REWRITE_SCHEMA, messages,
                     self.req.teacher)

    def task_unit(self, skill: Skill, index: int, query_type: QueryType) -> Unit:
        p = self.tasks_prompt
        trap = p.text("no-trap" if (index + 1) % self.req.trap_every == 0 else "trap")
        messages = p.messages(skill_block=skill_block(skill), index=index + 1, query_type=query_type.value,
                              answer_rule=ANSWER_RULES[query_type][0],
                              difficulty=DIFFICULTIES[index % len(DIFFICULTIES)], trap=trap)
        return _unit("task", skill.name, index, query_type.value, p, task_schema(query_type), messages,
                     self.req.teacher)

    # -- teacher
    async def _ask(self, unit: Unit, attempt: int):
        litellm = quiet_litellm()

        req = self.req
        temperature = req.temperature if attempt == 0 or req.temperature > 0 else RETRY_TEMPERATURE
        kwargs = _request(req.teacher_url, req.teacher, list(unit.messages),
                          Sampling(temperature=temperature, max_tokens=req.max_tokens,
                                   seed=req.seed + attempt if req.sampling_seed else None))
        kwargs.update(timeout=req.policy.timeout_s, max_retries=0, num_retries=0)
        if req.json_schema:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": unit.stage, "schema": unit.schema}}
        return await call_with_retries(lambda: litellm.acompletion(**kwargs), self.limiter, req.policy,
                                       self.stats.fanout)

    @staticmethod
    def _validate(unit: Unit, text: str) -> dict:
        if unit.stage == "rewrite":
            return parse_json_reply(text, RewriteReply, "teacher").model_dump()
        reply = parse_json_reply(text, TaskReply, "teacher")
        check_answer(QueryType(unit.query_type), reply.expected)
        return reply.model_dump()

    async def run_unit(self, unit: Unit) -> dict:
        if unit.id in self.done:
            self.stats.reused += 1
            return self.done[unit.id]
        self.stats.called += 1
        errors: list[str] = []
        usage: Counter[str] = Counter()
        output, attempt = None, 0
        for attempt in range(1, self.req.max_attempts + 1):
            try:
                response, _ = await self._ask(unit, attempt - 1)
            except CallFailed as exc:  # the transport already retried; another seed will not help
                errors.append(f"call failed: {exc.reason}")
                break
            u = getattr(response, "usage", None)
            usage["prompt_tokens"] += getattr(u, "prompt_tokens", 0) or 0
            usage["completion_tokens"] += getattr(u, "completion_tokens", 0) or 0
            choice = response.choices[0]
            if choice.finish_reason == "length":
                self.stats.truncated_replies += 1
                errors.append(f"truncated reply (finish_reason=length at max_tokens={self.req.max_tokens})")
                continue
            try:
                output = self._validate(unit, choice.message.content or "")
                break
            except (UnparseableReply, ValueError) as exc:
                self.stats.invalid_replies += 1
                errors.append(f"invalid reply: {str(exc)[:300]}")
        self.stats.retried_units += attempt > 1
        row = {"unit_id": unit.id, "stage": unit.stage, "skill": unit.skill, "index": unit.index,
               "query_type": unit.query_type, "prompt_version": unit.prompt_version,
               "prompt_hash": unit.prompt_hash, "schema_hash": schema_hash(unit.schema),
               "teacher": self.req.teacher, "status": "ok" if output is not None else "failed",
               "output": output, "attempts": attempt, "errors": errors, **usage, "finished_at": time.time()}
        self.store.append(row)
        return row

    # -- pipeline
    async def author_skill(self, decl: DeclarativeSkill, types: list[QueryType]) -> tuple[Skill | None, list[dict]]:
        row = await self.run_unit(self.rewrite_unit(decl))
        self._count(row)
        if row["status"] != "ok":
            return None, []
        skill = Skill(name=decl.name, category=decl.category, description=decl.description, uid=decl.uid,
                      **row["output"])
        rows = await asyncio.gather(*(self.run_unit(self.task_unit(skill, i, t)) for i, t in enumerate(types)))
        for r in rows:
            self._count(r)
        return skill, list(rows)

    def _count(self, row: dict) -> None:
        self.stats.units += 1
        if row["status"] == "ok":
            self.stats.ok += 1
        else:
            self.stats.failed += 1
            self.failures.append({"stage": row["stage"], "skill": row["skill"], "index": row["index"],
                                  "attempts": row["attempts"], "errors": row["errors"][-3:]})


def _task(row: dict, split: str) -> Task:
    out = row["output"]
    qt = QueryType(row["query_type"])
    expected = out["expected"].strip().lower() if qt in (QueryType.YES_NO, QueryType.YES_NO_VERIFICATION) \
        else out["expected"]
    return Task(uid=task_uid(row["skill"], row["index"]), skill=row["skill"], query_type=qt,
                question=out["question"], passage=out["passage"], expected=expected,
                must_identify=out["must_identify"], correct_conclusion=out["correct_conclusion"], split=split,
                title=out.get("title") or "", difficulty=out.get("difficulty"))


def run_authoring(req: AuthorRequest) -> dict:
    """Author a bench with a teacher model: tasks per skill, checked and deduplicated; returns a summary."""
    if req.tasks_per_skill < 1:
        raise ValueError(f"tasks per skill must be ≥ 1, got {req.tasks_per_skill}")
    if not 0 <= req.eval_fraction <= 1:
        raise ValueError(f"eval fraction must be within [0, 1], got {req.eval_fraction}")
    decls = load_declarative(req.skills_file)
    if not req.teacher_url:
        require_credentials(req.teacher, "teacher", "SKILLSWEEP_SERVER_API_KEY")
    types = allocate_query_types(len(decls) * req.tasks_per_skill, req.mix, req.seed)
    out = Path(req.out)
    started = time.perf_counter()
    with RunStore(out, "authoring", "unit_id", keep="last") as store:
        author = Author(req, store)

        async def main():
            n = req.tasks_per_skill
            return await asyncio.gather(*(author.author_skill(d, types[i * n:(i + 1) * n])
                                          for i, d in enumerate(decls)))

        results = asyncio.run(main())
    skills = [s for s, _ in results if s is not None]
    splits = {}
    for s in skills:
        splits.update(split_of(s.name, req.tasks_per_skill, req.eval_fraction, req.seed))
    tasks = [_task(r, splits[task_uid(r["skill"], r["index"])])
             for _, rows in results for r in rows if r["status"] == "ok"]
    # Eval tasks first: of a near-duplicate pair across the split, the train member goes.
    ordered = sorted(tasks, key=lambda t: t.split != "eval")
    pairs = near_duplicates([(t.uid, f"{t.passage}\n{t.question}") for t in ordered], req.dedup_threshold)
    removed = {p.removed for p in pairs}
    split_by_uid = {t.uid: t.split for t in tasks}
    kept = tuple(t for t in tasks if t.uid not in removed)
    bench = Bench(name=req.name or out.name, skills={s.name: s for s in skills}, tasks=kept)
    write_native(bench, out)
    bench = load_native(out, bench.name)  # what a user will load: validated on the way back in
    duplicates = [{"kept": p.kept, "removed": p.removed, "similarity": p.similarity,
                   "cross_split": split_by_uid[p.kept] != split_by_uid[p.removed]} for p in pairs]
    counts = {"skills": len(bench.skills), "tasks": len(bench.tasks),
              "train": len(bench.split("train")), "eval": len(bench.split("eval")),
              "query_types": dict(Counter(t.query_type.value for t in bench.tasks)),
              "duplicates_removed": len(removed), "failed_units": len(author.failures)}
    manifest = update_manifest(
        out, git_commit=git_commit(), packages=package_versions(),
        bench={"name": bench.name, "hash": bench.content_hash()},
        authoring={
            "teacher": req.teacher, "teacher_url": req.teacher_url,
            "skills_file": str(Path(req.skills_file).resolve()),
            "skills_file_sha256": hashlib.sha256(Path(req.skills_file).read_bytes()).hexdigest(),
            "prompts": {"rewrite": author.rewrite_prompt.provenance(), "tasks": author.tasks_prompt.provenance()},
            "schemas": {"rewrite": schema_hash(REWRITE_SCHEMA),
                        **{f"task:{q.value}": schema_hash(task_schema(q)) for q in QueryType}},
            "tasks_per_skill": req.tasks_per_skill, "mix": req.mix, "eval_fraction": req.eval_fraction,
            "seed": req.seed, "temperature": req.temperature, "max_tokens": req.max_tokens,
            "max_attempts": req.max_attempts, "retry_temperature": RETRY_TEMPERATURE,
            "sampling_seed": req.sampling_seed, "json_schema": req.json_schema,
            "dedup": {"method": "datasketch MinHashLSH", "num_perm": NUM_PERM, "shingle_words": SHINGLE,
                      "threshold": req.dedup_threshold, "pairs": duplicates},
            "counts": counts, "failed": author.failures, "last_run": author.stats.as_dict(),
            "wall_s": round(time.perf_counter() - started, 2),
        })
    return {"bench_dir": str(out), "bench_hash": manifest["bench"]["hash"], **counts,
            "stats": author.stats.as_dict(), "failed": author.failures, "duplicates": duplicates}
