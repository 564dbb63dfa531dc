"""``skillsweep judge``: score a run's episodes into ``verdicts.parquet``, incrementally.

Dispatch modes: ``deterministic`` (extractor only; FREE_FORM and the cells the extractor is
uncertain about left unscored, with the reason), ``det-mixed`` (extractor for
YES_NO/VERIFICATION/SINGLE_WORD/RANKING, LLM judge for FREE_FORM and for every cell the
extractor is uncertain about: the study's native path, minus its guesses) and ``llm-only``
(LLM judge for every episode). A verdict's id hashes the episode,
judge label, mode and prompt/extractor versions; an id already judged is never recomputed,
and ``only_unscored`` retries exactly the unscored ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import polars as pl

from harness.bench import load_bench
from harness.bench.model import QueryType
from harness.client import NO_TIMEOUT_S, is_local_engine, server_api_key
from harness.errors import SkillsweepError
from harness.judging.extract import DETERMINISTIC_TYPES, EXTRACTOR_VERSION, judge_deterministic, question_options
from harness.judging.llm_judge import (
    JUDGE_PROMPT_VERSION,
    VERDICT_SCHEMA,
    UnparseableReply,
    judge_messages,
    parse_reply,
)
from harness.judging.verdict import MODES, Mode, Verdict
from harness.libenv import quiet_litellm
from harness.progress import DEFAULT_EVERY_S, Snapshot, Ticker
from harness.retry import AdaptiveLimiter, CallFailed, FanoutCounters, RetryPolicy, call_with_retries
from harness.runstore import RunStore, TableMissing, read_manifest, read_table, run_dir
from harness.schema import CELL_COLUMNS, VERDICT_TYPES, row
from serve.engine_watch import EngineWatch, next_limit


class JudgeError(SkillsweepError, ValueError):
    """A judge request that cannot be carried out as asked."""


@dataclass
class JudgeRequest:
    run: str
    mode: Mode = Mode.DET_MIXED
    label: str | None = None
    judge_model: str | None = None  # a litellm model string: hosted_vllm/NAME, openrouter/openai/gpt-5, ...
    api_base: str | None = None
    concurrency: int = 64
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    only_unscored: bool = False
    bench: str | None = None
    json_schema: bool = True
    max_tokens: int = 512
    progress_every_s: float = DEFAULT_EVERY_S


@dataclass
class JudgeStats:
    episodes: int = 0
    skipped: int = 0
    judged: int = 0
    passed: int = 0
    failed: int = 0
    unscored: int = 0
    llm_verdicts: int = 0  # verdicts that needed the LLM judge
    llm_call_failed: int = 0  # ... of which the call failed outright (no reply to score)
    parse_retries: int = 0
    cost_usd: float = 0.0
    unscored_reasons: Counter = field(default_factory=Counter)
    fanout: FanoutCounters = field(default_factory=FanoutCounters)
    wall_s: float = 0.0

    def snapshot(self) -> Snapshot:
        gave_up = sum(self.fanout.exhausted.values()) + self.fanout.fatal
        extra = [f"pass {self.passed}", f"fail {self.failed}", f"unscored {self.unscored}"]
        extra += [f"retries {sum(self.fanout.retries.values())}"] if self.fanout.retries else []
        extra += [f"gave up {gave_up}"] if gave_up else []
        return Snapshot(self.judged, self.episodes - self.skipped, extra=" · ".join(extra))

    @property
    def give_ups(self) -> int:
        """Judge calls that ended without a reply (retries exhausted, or a fatal error)."""
        return sum(self.fanout.exhausted.values()) + self.fanout.fatal

    @property
    def calls(self) -> int:
        return self.fanout.calls

    @property
    def retries(self) -> dict[str, int]:
        return dict(self.fanout.retries)

    @property
    def exhausted(self) -> dict[str, int]:
        return dict(self.fanout.exhausted)

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("fanout", "unscored_reasons")}
        d["unscored_reasons"] = dict(self.unscored_reasons)
        return d | {"calls": self.calls, "retries": self.retries, "exhausted": self.exhausted,
                    "fatal": self.fanout.fatal, "give_ups": self.give_ups}


@dataclass
class JudgingSummary:
    """What ``run_judging`` did for one verdict set; with ``error``, why it could not."""

    run_dir: str
    label: str | None
    mode: str = ""
    stats: JudgeStats = field(default_factory=JudgeStats)
    verdicts: int = 0  # in the set, after this pass
    unscored_total: int = 0
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict:
        """As ``skillsweep judge`` prints it."""
        d = {"run_dir": self.run_dir, "label": self.label, "mode": self.mode, "stats": self.stats.as_dict(),
             "verdicts": self.verdicts, "unscored_total": self.unscored_total}
        return d | ({"error": self.error} if self.failed else {})


def verdict_id(cell_id: str, label: str, mode: str) -> str:
    """A verdict's stable id: the cell, the judge label and mode, and the prompt and extractor versions."""
    key = [cell_id, label, mode, JUDGE_PROMPT_VERSION, EXTRACTOR_VERSION]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def reason_class(reason: str) -> str:
    """A failure reason's class (the text before its first colon), for counting reasons."""
    return reason.split(":")[0][:60]


def require_credentials(model: str, role: str, override_var: str) -> None:
    """Fail before a fan-out, naming the variable: litellm reports a missing key as a server
    error, which would otherwise be retried for every call."""
    litellm = quiet_litellm()
    if os.environ.get(override_var) or is_local_engine(model):
        return
    missing = litellm.validate_environment(model=model).get("missing_keys") or []
    if missing:
        raise JudgeError(f"{role} {model!r} needs {', '.join(missing)} in the environment (or {override_var})")


class LLMJudge:
    """One judge model reached through litellm, with the fan-out's limiter and retries."""

    def __init__(self, req: JudgeRequest, stats: JudgeStats, calls: RunStore):
        self.req, self.stats, self.calls = req, stats, calls
        if not req.judge_model:
            raise JudgeError(f"mode {req.mode!r} needs a judge model")
        self.model: str = req.judge_model
        self.limiter = AdaptiveLimiter(req.concurrency)
        # A local engine gets no wall-clock cap per call (harness.client.NO_TIMEOUT_S): a busy
        # CPU judge is slow, not broken, and a timed-out call would only be made again.
        self.local = is_local_engine(self.model)
        self.policy = replace(req.policy, timeout_s=None) if self.local else req.policy
        # Set (inside the event loop) for a local engine with a known address: its watch decides
        # when a call is abandoned, and its queue sets how many calls are in flight.
        self.watch: EngineWatch | None = None
        self._check_credentials()

    def _check_credentials(self) -> None:
        require_credentials(self.model, "judge", "SKILLSWEEP_JUDGE_API_KEY")

    def _kwargs(self, messages: list[dict]) -> dict:
        req = self.req
        kwargs: dict[str, Any] = dict(model=req.judge_model, messages=messages, temperature=0.0,
                                      max_tokens=req.max_tokens, timeout=self.policy.timeout_s or NO_TIMEOUT_S,
                                      max_retries=0, num_retries=0)
        if req.api_base:
            kwargs["api_base"] = req.api_base
        key = os.environ.get("SKILLSWEEP_JUDGE_API_KEY")
        if key:
            kwargs["api_key"] = key
        elif self.local:
            # A sweep's own server: its key (a server other nodes reach has one), or any key.
            kwargs["api_key"] = server_api_key() or "EMPTY"
        if req.json_schema:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA}}
        return kwargs

    async def judge(self, vid: str, messages: list[dict]) -> tuple[Verdict, dict]:
        litellm = quiet_litellm()
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "attempts": 0, "latency_s": 0.0}
        last_error = "no reply"
        for parse_try in range(2):  # one retry for an unparseable reply
            started = time.perf_counter()

            async def call():
                return await litellm.acompletion(**self._kwargs(messages))

            if self.watch is not None:
                self.limiter.limit = next_limit(self.limiter.limit, self.limiter.in_flight, self.watch.latest,
                                                low=1, high=self.limiter.maximum)
            try:
                response, attempts = await call_with_retries(call, self.limiter, self.policy, self.stats.fanout,
                                                             engine=self.watch)
            except CallFailed as exc:
                usage["attempts"] += exc.attempts
                self._log_call(vid, "failed", exc.attempts, None, time.perf_counter() - started, exc.reason)
                self.stats.llm_call_failed += 1
                return Verdict.unscored(self.model, f"judge call failed: {exc.reason}"), usage
            usage["attempts"] += attempts
            elapsed = time.perf_counter() - started
            usage["latency_s"] += elapsed
            self._add_usage(usage, response)
            text = response.choices[0].message.content or ""
            try:
                reply = parse_reply(text)
            except UnparseableReply as exc:
                last_error = str(exc)
                self._log_call(vid, "unparseable", attempts, response, elapsed, last_error)
                if parse_try == 0:
                    self.stats.parse_retries += 1
                continue
            self._log_call(vid, "ok", attempts, response, elapsed, None)
            return Verdict(reply.conclusion_reached, reply.score, self.model,
                           rationale=reply.rationale, criteria_met=tuple(reply.criteria_met)), usage
        return Verdict.unscored(self.model, f"unparseable judge reply after retry: {last_error}"), usage

    @staticmethod
    def _add_usage(usage: dict, response) -> None:
        litellm = quiet_litellm()
        u = getattr(response, "usage", None)
        usage["prompt_tokens"] += getattr(u, "prompt_tokens", 0) or 0
        usage["completion_tokens"] += getattr(u, "completion_tokens", 0) or 0
        try:
            usage["cost_usd"] += float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # litellm has no price for local or unknown models
            pass

    def _log_call(self, vid: str, outcome: str, attempts: int, response, latency: float, error: str | None) -> None:
        u = getattr(response, "usage", None)
        self.calls.append({"call_id": uuid.uuid4().hex, "verdict_id": vid, "judge_model": self.req.judge_model, "outcome": outcome,
                           "attempts": attempts, "prompt_tokens": getattr(u, "prompt_tokens", None),
                           "completion_tokens": getattr(u, "completion_tokens", None),
                           "latency_s": round(latency, 4), "error": error, "time": time.time()})


def _uses_llm(mode: str, query_type: str) -> bool:
    return mode == Mode.LLM_ONLY or (mode == Mode.DET_MIXED and QueryType(query_type) not in DETERMINISTIC_TYPES)


def _extract(req: JudgeRequest, ep: dict, task) -> Verdict | None:
    """The extractor's verdict for a cell it may judge in this mode; None where it has no say."""
    if task is None or _uses_llm(req.mode, ep["query_type"]) or QueryType(ep["query_type"]) not in DETERMINISTIC_TYPES:
        return None
    final = ep.get("final")
    response = final if final is not None else ep.get("response") or ""
    return judge_deterministic(ep["query_type"], response, task.expected, question_options(task.question))


def _escalates(req: JudgeRequest, extracted: Verdict | None) -> bool:
    return req.mode == Mode.DET_MIXED and extracted is not None and extracted.uncertain


def _verdict_row(episode: dict, vid: str, req: JudgeRequest, label: str, verdict: Verdict, usage: dict,
                 llm: bool, escalated: Verdict | None = None) -> dict:
    return row(VERDICT_TYPES, {
        "verdict_id": vid, **{c: episode.get(c) for c in CELL_COLUMNS},
        "judge_label": label, "mode": str(req.mode), "judge_kind": "llm" if llm else "deterministic",
        "judge": req.judge_model if llm else "extractor",
        "prompt_version": JUDGE_PROMPT_VERSION if llm else EXTRACTOR_VERSION,
        "passed": verdict.passed, "score": verdict.score, "unscored_reason": verdict.unscored_reason,
        "rule": verdict.rule, "extracted": verdict.extracted if escalated is None else escalated.extracted,
        "rationale": verdict.rationale,
        # Why the extractor handed this cell to the LLM judge (det-mixed), if it did.
        "escalated_from": None if escalated is None else f"{escalated.rule}: {escalated.unscored_reason}",
        "criteria_met": json.dumps(list(verdict.criteria_met)),
        "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
        "cost_usd": usage.get("cost_usd"), "latency_s": round(usage.get("latency_s", 0.0), 4),
        "attempts": usage.get("attempts", 0), "judged_at": time.time(),
    })


def default_label(req: JudgeRequest) -> str:
    """The verdict set's label: the one given, or the mode and the judge model's short name."""
    if req.label:
        return req.label
    if req.mode == Mode.DETERMINISTIC:
        return "deterministic"
    assert req.judge_model is not None, "an LLM mode has a judge model (run_judging checks)"
    return f"{req.mode}:{req.judge_model.split('/')[-1]}"


def _check_one_judge(latest: dict[str, dict], label: str, req: JudgeRequest) -> None:
    """A verdict set holds one judge configuration: refuse to add another judge or mode to it."""
    judge = req.judge_model if req.mode != Mode.DETERMINISTIC else None
    for prior in latest.values():
        if prior.get("judge_label") != label:
            continue
        if prior.get("mode") != req.mode:
            raise JudgeError(f"verdict set {label!r} was judged in mode {prior.get('mode')}, not {req.mode}: "
                             "pass another --judge-label for a new verdict set")
        if prior.get("judge_kind") == "llm" and judge and prior.get("judge") != judge:
            raise JudgeError(f"verdict set {label!r} was judged by {prior.get('judge')}; --judge-model {judge} would mix "
                             "two judges in one set: pass another --judge-label for a new verdict set")


def run_judging(req: JudgeRequest, progress=None) -> JudgingSummary:
    """Judge a run's episodes (deterministically, by an LLM, or both) into its verdicts table; returns a summary."""
    if req.mode not in MODES:
        raise JudgeError(f"mode {req.mode!r}: expected one of {', '.join(MODES)}")
    if req.mode != Mode.DETERMINISTIC and not req.judge_model:
        raise JudgeError(f"mode {req.mode!r} needs --judge-model MODEL (a litellm model string)")
    folder = run_dir(req.run)
    try:
        episodes = read_table(folder)
    except TableMissing:
        raise TableMissing(f"{folder / 'episodes.parquet'}: no episodes to judge "
                           "(run `skillsweep generate` first)") from None
    if not len(episodes):
        raise JudgeError(f"{folder / 'episodes.parquet'}: no episodes to judge (run `skillsweep generate` first)")
    manifest = read_manifest(folder)
    bench_spec = req.bench or (manifest.get("bench") or {}).get("spec")
    if not bench_spec:
        raise JudgeError(f"{folder}/manifest.json names no bench; pass --bench")
    bench = load_bench(bench_spec)
    tasks = {t.uid: t for t in bench.tasks}
    label = default_label(req)
    stats = JudgeStats(episodes=len(episodes))
    with RunStore(folder, "verdicts", "verdict_id", keep="last") as store, ExitStack() as stack:
        latest = store.latest()
        _check_one_judge(latest, label, req)  # before the call log exists: a refusal writes nothing
        calls = stack.enter_context(RunStore(folder, "judge_calls", "call_id"))
        todo = []
        for ep in episodes.iter_rows(named=True):
            vid = verdict_id(ep["cell_id"], label, req.mode)
            prior = latest.get(vid)
            if prior is None or (req.only_unscored and prior["passed"] is None):
                todo.append((vid, ep))
        stats.skipped = len(episodes) - len(todo)
        # The extractor runs first (it is cheap); in det-mixed what it is unsure of goes to the judge.
        extracted = {vid: _extract(req, ep, tasks.get(ep["task_uid"])) for vid, ep in todo}
        needs_llm = any(_uses_llm(req.mode, ep["query_type"]) or _escalates(req, extracted[vid]) for vid, ep in todo)
        judge = LLMJudge(req, stats, calls) if needs_llm else None
        started = time.perf_counter()

        async def one(vid: str, ep: dict) -> None:
            task = tasks.get(ep["task_uid"])
            final = ep.get("final")
            response = final if final is not None else ep.get("response") or ""
            escalated = extracted[vid] if _escalates(req, extracted[vid]) else None
            llm = _uses_llm(req.mode, ep["query_type"]) or escalated is not None
            usage: dict = {}
            if task is None:
                verdict = Verdict.unscored("none", f"task {ep['task_uid']} is not in bench {bench.name}")
            elif llm:
                assert judge is not None, "needs_llm covers every cell an LLM judges"
                stats.llm_verdicts += 1
                verdict, usage = await judge.judge(vid, judge_messages(
                    question=task.question, passage=task.passage, expected=task.expected,
                    must_identify=task.must_identify, correct_conclusion=task.correct_conclusion,
                    response=response))
            elif req.mode == Mode.DETERMINISTIC and QueryType(ep["query_type"]) not in DETERMINISTIC_TYPES:
                verdict = Verdict.unscored("none", "free-form answers need an LLM judge (mode deterministic)")
            else:
                found = extracted[vid]
                assert found is not None, "the extractor has a verdict for every other cell"
                verdict = found
            store.append(_verdict_row(ep, vid, req, label, verdict, usage, llm, escalated))
            stats.judged += 1
            stats.cost_usd += usage.get("cost_usd", 0.0) or 0.0
            if verdict.passed is None:
                stats.unscored += 1
                stats.unscored_reasons[reason_class(verdict.unscored_reason or "")] += 1
            elif verdict.passed:
                stats.passed += 1
            else:
                stats.failed += 1
            if progress:
                progress(stats)

        async def main() -> None:
            async with AsyncExitStack() as scope:
                if judge is not None and judge.local and req.api_base:
                    judge.watch = await scope.enter_async_context(EngineWatch(req.api_base))
                await scope.enter_async_context(Ticker(f"{folder.name} · {label}", "verdicts", stats.snapshot,
                                                       req.progress_every_s if todo else 0))
                await asyncio.gather(*(one(vid, ep) for vid, ep in todo))

        asyncio.run(main())
        stats.wall_s = time.perf_counter() - started
        table = store.write_table()
        if calls.rows():
            calls.write_table()
    mine = table.filter(pl.col("judge_label") == label) if len(table) else table
    return JudgingSummary(str(folder), label, req.mode, stats, verdicts=len(mine),
                          unscored_total=int(mine["passed"].null_count()) if len(mine) else 0)
