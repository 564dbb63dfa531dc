"""Judging: the real vLLM server as a judge through litellm, and fault injection."""

import json

import polars as pl
import pytest

from harness.bench import load_bench
from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.judging.extract import EXTRACTOR_VERSION
from harness.judging.job import JudgeRequest, run_judging
from harness.judging.llm_judge import JUDGE_PROMPT_VERSION
from harness.prompts import render
from harness.retry import RetryPolicy

from fault_server import FaultServer


@pytest.fixture(scope="module")
def small_run(server, tmp_path_factory):
    """A real generated run: tiny base, train split, both conditions."""
    run = tmp_path_factory.mktemp("judged") / "run"
    run_generation(GenerateRequest(run=str(run), model="tiny", url=server.base_url, split="train",
                                   sampling=Sampling(max_tokens=24)))
    return run


@pytest.mark.parametrize("mode", ["det-mixed", "llm-only"])
def test_vllm_judge_one_verdict_per_episode_then_zero_calls(server, small_run, mode):
    request = JudgeRequest(run=str(small_run), mode=mode, judge_model="hosted_vllm/tiny",
                           api_base=server.api_base, label=f"tiny-{mode}")
    first = run_judging(request)
    episodes = pl.read_parquet(small_run / "episodes.parquet")
    verdicts = pl.read_parquet(small_run / "verdicts.parquet").filter(pl.col("judge_label") == f"tiny-{mode}")
    assert first.verdicts == len(episodes) == len(verdicts) == verdicts["cell_id"].n_unique()
    llm_rows = verdicts.filter(pl.col("judge_kind") == "llm")
    # det-mixed: FREE_FORM, plus every cell the extractor was not sure of (the tiny model's noise).
    escalated = verdicts["escalated_from"].is_not_null().sum()
    expected_llm = len(episodes) if mode == "llm-only" else (episodes["query_type"] == "FREE_FORM").sum() + escalated
    assert len(llm_rows) == expected_llm > 0
    assert first.stats.calls >= expected_llm
    # Constrained decoding makes even the random judge reply with parseable verdicts.
    assert llm_rows["passed"].null_count() == 0 and llm_rows["prompt_tokens"].min() > 0
    # Every row says what judged it and how.
    assert set(verdicts["prompt_version"]) <= {JUDGE_PROMPT_VERSION, EXTRACTOR_VERSION}
    assert (verdicts["passed"].is_not_null() | verdicts["unscored_reason"].is_not_null()).all()

    second = run_judging(request)
    assert second.stats.calls == 0 and second.stats.judged == 0
    assert second.stats.skipped == len(episodes)


def _synthetic_run(tmp_path, labels=("m1", "m2")):
    """Episodes for every builtin task × condition × label, without generating."""
    bench = load_bench("builtin")
    rows = []
    for label in labels:
        for task in bench.tasks:
            for condition in ("baseline", "curated"):
                prompt = render(bench, task, condition)
                rows.append({"cell_id": f"{label}-{task.uid}-{condition}", "run": "synthetic", "model_label": label,
                             "base_model": label, "adapter_hash": None, "backend": "vllm", "task_uid": task.uid,
                             "skill": task.skill, "query_type": task.query_type.value, "condition": condition,
                             "temperature": 0.0, "max_tokens": 64, "repetition_penalty": 1.05,
                             "prompt_hash": prompt.hash, "response": f"ANSWER: {task.expected}",
                             "final": f"ANSWER: {task.expected}"})
    run = tmp_path / "synthetic"
    run.mkdir()
    pl.DataFrame(rows).write_parquet(run / "episodes.parquet")
    (run / "manifest.json").write_text(json.dumps({"bench": {"spec": "builtin"}}))
    return run, len(rows)


@pytest.mark.slow
def test_faults_never_become_fails_and_only_unscored_completes(tmp_path, monkeypatch):
    run, n = _synthetic_run(tmp_path)
    policy = RetryPolicy(max_attempts=4, timeout_s=1.0, base_delay_s=0.01, max_delay_s=0.05)
    rates = dict(rate_429=0.10, rate_500=0.08, rate_slow=0.05, rate_garbage=0.07)
    # An API model (openai-compatible provider): per-call timeouts and retries apply.
    monkeypatch.setenv("SKILLSWEEP_JUDGE_API_KEY", "test-key-not-a-secret")
    with FaultServer(slow_s=3.0, seed=7, **rates) as fake:
        request = JudgeRequest(run=str(run), mode="llm-only", judge_model="openai/fault", api_base=fake.api_base,
                               label="faulty", concurrency=32, policy=policy, json_schema=False)
        summary = run_judging(request)
        stats, injected = summary.stats, fake.injected
        assert stats.calls == sum(injected.values()) >= 200
        assert "connection" not in stats.retries
        assert sum(injected[k] for k in ("429", "500", "slow", "garbage")) / stats.calls > 0.2
        verdicts = pl.read_parquet(run / "verdicts.parquet")
        assert len(verdicts) == n == verdicts["cell_id"].n_unique()
        # Nothing fails because of a fault: the fake only ever says "pass".
        assert verdicts.filter(pl.col("passed") == False).is_empty()  # noqa: E712
        unscored = verdicts.filter(pl.col("passed").is_null())
        assert unscored["unscored_reason"].null_count() == 0
        # Every injected fault is accounted for: retried, or the reason a verdict is unscored.
        for kind, fault in (("rate_limited", "429"), ("server_error", "500"), ("timeout", "slow")):
            assert stats.retries.get(kind, 0) + stats.exhausted.get(kind, 0) == injected[fault], kind
        unparseable = unscored.filter(pl.col("unscored_reason").str.starts_with("unparseable")).height
        assert stats.parse_retries + unparseable == injected["garbage"]
        gave_up = unscored.filter(pl.col("unscored_reason").str.starts_with("judge call failed")).height
        assert gave_up == sum(stats.exhausted.values())
        assert stats.passed + stats.unscored == n and stats.failed == 0
        calls = pl.read_parquet(run / "judge_calls.parquet")
        assert set(calls["outcome"]) <= {"ok", "unparseable", "failed"}

        fake.set_rates(rate_429=0, rate_500=0, rate_slow=0, rate_garbage=0)
        before = dict(fake.injected)
        again = run_judging(JudgeRequest(**{**request.__dict__, "only_unscored": True}))
        assert again.stats.judged == len(unscored) and again.stats.skipped == n - len(unscored)
        assert fake.injected["ok"] - before.get("ok", 0) == len(unscored)
        final = pl.read_parquet(run / "verdicts.parquet")
        assert len(final) == n and final["passed"].null_count() == 0 and final["passed"].all()


@pytest.mark.slow
def test_local_judge_that_is_slow_but_alive_is_never_timed_out(tmp_path):
    # A local engine (hosted_vllm/…) gets no per-call cap: each reply is held three times
    # longer than the policy's timeout, and every verdict still comes from its first call.
    run, n = _synthetic_run(tmp_path)
    policy = RetryPolicy(max_attempts=2, timeout_s=1.0)
    with FaultServer(hold_s=3.0) as fake:
        summary = run_judging(JudgeRequest(run=str(run), mode="llm-only", judge_model="hosted_vllm/fault",
                                           api_base=fake.api_base, label="slow", concurrency=64, policy=policy,
                                           json_schema=False))
        received = list(fake.received.values())
    stats = summary.stats
    assert stats.passed == n and stats.unscored == 0 and stats.give_ups == 0
    assert stats.calls == n == sum(received) and stats.retries == {}


def test_judge_refuses_bad_requests(tmp_path):
    run, _ = _synthetic_run(tmp_path)
    with pytest.raises(ValueError, match="needs --judge-model MODEL"):
        run_judging(JudgeRequest(run=str(run), mode="llm-only"))
    with pytest.raises(ValueError, match="expected one of det-mixed"):
        run_judging(JudgeRequest(run=str(run), mode="sometimes"))
    with pytest.raises(ValueError, match="needs OPENROUTER_API_KEY in the environment"):
        run_judging(JudgeRequest(run=str(run), mode="llm-only", judge_model="openrouter/openai/gpt-5"))
    with pytest.raises(FileNotFoundError, match="no episodes to judge"):
        run_judging(JudgeRequest(run=str(tmp_path / "empty"), mode="deterministic"))


def test_deterministic_mode_makes_no_calls(tmp_path):
    run, n = _synthetic_run(tmp_path, labels=("m1",))
    summary = run_judging(JudgeRequest(run=str(run), mode="deterministic"))
    verdicts = pl.read_parquet(run / "verdicts.parquet")
    free = verdicts.filter(pl.col("query_type") == "FREE_FORM")
    assert summary.stats.calls == 0 and len(verdicts) == n
    assert free["passed"].null_count() == len(free) and free["unscored_reason"].str.contains("LLM judge").all()
    # The synthetic responses state the expected answer, so every deterministic type passes.
    assert verdicts.filter(pl.col("query_type") != "FREE_FORM")["passed"].all()


def _restate(run, response: str) -> None:
    episodes = pl.read_parquet(run / "episodes.parquet")
    episodes.with_columns(pl.lit(response).alias("response"), pl.lit(response).alias("final")).write_parquet(
        run / "episodes.parquet")


def test_uncertain_cells_go_to_the_llm_in_det_mixed_and_stay_unscored_in_deterministic(tmp_path):
    run, n = _synthetic_run(tmp_path, labels=("m1",))
    _restate(run, "I weighed both readings carefully and I am still torn.")  # commits to nothing
    run_judging(JudgeRequest(run=str(run), mode="deterministic"))
    det = pl.read_parquet(run / "verdicts.parquet")
    assert det["passed"].null_count() == n
    decidable = det.filter(pl.col("query_type") != "FREE_FORM")
    assert decidable["unscored_reason"].str.contains("no (yes/no )?answer found").all()
    assert decidable["escalated_from"].null_count() == len(decidable)
    with FaultServer(seed=1) as fake:  # no faults: a judge that always says "pass"
        summary = run_judging(JudgeRequest(run=str(run), mode="det-mixed", judge_model="hosted_vllm/fake",
                                           api_base=fake.api_base, label="mixed", json_schema=False))
    mixed = pl.read_parquet(run / "verdicts.parquet").filter(pl.col("judge_label") == "mixed")
    assert summary.stats.calls == n and (mixed["judge_kind"] == "llm").all() and mixed["passed"].all()
    escalated = mixed.filter(pl.col("query_type") != "FREE_FORM")
    assert escalated["escalated_from"].str.contains(r"^(last-sentence|none): no (yes/no )?answer found$").all()
    assert mixed.filter(pl.col("query_type") == "FREE_FORM")["escalated_from"].null_count() == n - len(escalated)


@pytest.mark.slow
def test_judge_cli_deterministic(tmp_path):
    import subprocess
    import sys

    run, n = _synthetic_run(tmp_path, labels=("m1",))
    cmd = [sys.executable, "-m", "harness.cli", "judge", str(run), "--mode", "deterministic"]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert first["label"] == "deterministic" and first["verdicts"] == n and first["stats"]["calls"] == 0
    second = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert second["stats"]["judged"] == 0 and second["stats"]["skipped"] == n
    other = subprocess.run([sys.executable, "-m", "harness.cli", "rejudge", str(run), "--mode", "deterministic",
                            "--judge-label", "second"], capture_output=True, text=True, check=True).stdout
    assert json.loads(other)["verdicts"] == n  # a new verdict set beside the first
    assert set(pl.read_parquet(run / "verdicts.parquet")["judge_label"]) == {"deterministic", "second"}
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "judge", str(run), "--mode", "llm-only"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "needs --judge-model MODEL" in bad.stderr
