"""The episode and verdict tables every writer produces have the columns, in order, and the
types of harness.schema: generation and judging (against the fault server, a real HTTP
server), and the study importer."""

import asyncio
import json

import polars as pl
import pytest

from harness.bench import load_bench
from harness.client import Sampling
from harness.generate import Target, generate_vllm, plan
from harness.importer import import_skillmix
from harness.judging.job import JudgeRequest, run_judging
from harness.judging.verdict import Mode
from harness.runstore import RunStore
from harness.schema import EPISODE_COLUMNS, EPISODE_TYPES, VERDICT_COLUMNS, VERDICT_TYPES, SchemaError, mismatches, row

from fault_server import FaultServer

# The written tables' columns, as the README's run folder and the sweep's outputs have them.
EPISODES = ("cell_id run model_label base_model adapter_name adapter_hash backend dtype task_uid skill query_type "
            "condition prompt_version prompt_hash temperature max_tokens repetition_penalty seed response think final "
            "finish_reason prompt_tokens completion_tokens latency_s started_at finished_at versions").split()
VERDICTS = ("verdict_id cell_id run model_label base_model adapter_hash backend dtype task_uid skill query_type "
            "condition temperature max_tokens repetition_penalty judge_label mode judge_kind judge prompt_version "
            "passed score unscored_reason rule extracted rationale escalated_from criteria_met prompt_tokens "
            "completion_tokens cost_usd latency_s attempts judged_at").split()


def test_schema_columns_are_the_written_ones():
    assert list(EPISODE_COLUMNS) == EPISODES
    assert list(VERDICT_COLUMNS) == VERDICTS


def test_row_refuses_unknown_and_missing_columns():
    with pytest.raises(SchemaError, match="not in the schema"):
        row(EPISODE_TYPES, {"cell_id": "x", "nonsense": 1}, partial=True)
    with pytest.raises(SchemaError, match="missing"):
        row(EPISODE_TYPES, {"cell_id": "x"})
    assert list(row(EPISODE_TYPES, {"versions": "v", "cell_id": "x"}, partial=True)) == EPISODES


def test_generated_and_judged_tables_match_the_schema(tmp_path):
    folder = tmp_path / "run"
    with FaultServer() as fault:
        with RunStore(folder) as store:
            target = Target("fault", "fault-base", "vllm", Sampling(max_tokens=8), url=fault.api_base,
                            served_name="fault", dtype="float32")
            cells = plan(load_bench("builtin"), "eval", ["baseline", "curated"], [target])[:6]
            stats = asyncio.run(generate_vllm(cells, store, "run", concurrency=4, progress_every_s=0))
            episodes = store.write_table()
        assert stats.done == len(cells) == len(episodes)
        assert mismatches(episodes, EPISODE_TYPES) == []
        assert mismatches(pl.read_parquet(folder / "episodes.parquet"), EPISODE_TYPES) == []
        run_judging(JudgeRequest(run=str(folder), mode=Mode.DETERMINISTIC, bench="builtin", progress_every_s=0))
        # An LLM judge too (the fault server's replies are verdicts that pass), asked for JSON by schema.
        judged = run_judging(JudgeRequest(run=str(folder), mode=Mode.LLM_ONLY, judge_model="hosted_vllm/fault",
                                          api_base=fault.api_base, bench="builtin", progress_every_s=0))
    assert judged.stats.passed == len(cells) and judged.stats.give_ups == 0
    verdicts = pl.read_parquet(folder / "verdicts.parquet")
    assert len(verdicts) == 2 * len(cells)
    assert mismatches(verdicts, VERDICT_TYPES) == []


def test_imported_tables_match_the_schema(tmp_path):
    log = tmp_path / "episodes.json"
    log.write_text(json.dumps([
        {"task_uid": "t1", "model": "base:Qwen/Qwen3.5-2B", "condition": "baseline", "response": "yes",
         "passed": True, "score": 1, "tokens": 3, "elapsed_s": 1},
        {"task_uid": "t1", "model": "base:Qwen/Qwen3.5-2B", "condition": "curated", "response": "no",
         "passed": None, "score": None}]))
    out = tmp_path / "imported"
    import_skillmix(log, str(out), model_label="m", judge_label="study", mode="llm-only")
    assert mismatches(pl.read_parquet(out / "episodes.parquet"), EPISODE_TYPES) == []
    assert mismatches(pl.read_parquet(out / "verdicts.parquet"), VERDICT_TYPES) == []
