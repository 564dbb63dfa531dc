"""The generality probe: deterministic rules, the battery format, and a real run base vs adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from harness.bench.model import BenchError
from harness.probes.battery import ProbeKind, load_battery
from harness.probes.report import probe_table
from harness.probes.rules import factual_hit, format_locked, phantom_skill_block
from serve.registry import AdapterRegistry

from conftest import SERVER_MAX_RANK

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text", [
    "Autumn leaves drift down\n\nANSWER: a haiku",
    "Here are tips.\n**Answer:** be on time",
    "Some reasoning.\n### Final Answer\nCanberra",
    "Step 1: think.\nFinal answer - 8",
    "  answer: yes",
])
def test_format_locked_positive(text):
    assert format_locked(text)


@pytest.mark.parametrize("text", [
    "The capital of Australia is Canberra.",
    "I don't know the answer to that, sorry.",
    "Bonjour (French) and buenos días (Spanish).",
    "The answer is 12.",  # a plain sentence, not the bench's tag line
    "",
])
def test_format_locked_negative(text):
    assert not format_locked(text)


@pytest.mark.parametrize("text", [
    "Following the skill block, I first identify the base rate.",
    "As described in the provided procedure, step 1 is to list the claims.",
    "Applying the skill: base-rate-neglect, we compare frequencies.",
    "According to the procedure, the premise must be checked.",
    "The skill in the system prompt says to track beliefs.",
    "Using the given skills, I will answer.",
])
def test_phantom_skill_block_positive(text):
    assert phantom_skill_block(text)


@pytest.mark.parametrize("text", [
    "Cooking is a skill you build with practice: start with eggs.",
    "Follow the recipe's procedure step by step.",
    "Interview skills matter: prepare examples.",
    "The procedure for boiling water is simple.",
    "",
])
def test_phantom_skill_block_negative(text):
    assert not phantom_skill_block(text)


def test_factual_hit_rules():
    assert factual_hit("It is Canberra, not Sydney.", ["Canberra"])
    assert factual_hit("A spider has eight legs.", ["8", "eight"])
    assert factual_hit("They absorb CO2.", ["carbon dioxide", "CO2"])
    assert not factual_hit("The square root of 144 is 1212.", ["12"])  # whole words only
    assert not factual_hit("Gold is shiny.", ["Au"])  # 'Au' inside no word
    assert not factual_hit("Sydney.", ["Canberra"])


def test_builtin_battery_and_native_format_errors(tmp_path):
    battery = load_battery("builtin")
    kinds = [p.kind for p in battery.probes]
    assert (kinds.count(ProbeKind.GENERALITY), kinds.count(ProbeKind.FACTUAL), kinds.count(ProbeKind.TRICK)) == (6, 12, 6)
    assert all(p.false_premise and p.truth for p in battery.probes if p.kind == ProbeKind.TRICK)
    bad = tmp_path / "mine.jsonl"
    bad.write_text(json.dumps({"uid": "x", "kind": "factual", "prompt": "2+2?", "answers": ["4"]}) + "\n"
                   + json.dumps({"uid": "t", "kind": "trick", "prompt": "Why is the Moon cheese?"}) + "\n")
    with pytest.raises(BenchError, match=r"mine.jsonl, record line 2 \(t\).*false_premise"):
        load_battery(bad)


def test_probe_battery_base_and_adapter_side_by_side(server, tiny, adapters, tmp_path):
    registry = AdapterRegistry(server.api_base, tiny, "tiny", SERVER_MAX_RANK)
    adapter, _ = registry.load("a", adapters["a"], check=False)
    run = tmp_path / "probes"
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "harness.cli", "probe-battery", "--model", "tiny", "--url", server.base_url,
                "--adapter", "a", "--run", str(run), "--judge-model", "hosted_vllm/tiny",
                "--judge-api-base", server.api_base, "--max-tokens", "24"]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["targets"] == ["tiny", "tiny+a"] and summary["cells"] == 48 and summary["missing"] == 0
        scores = pl.read_parquet(run / "probe_scores.parquet")
        counts = {r["column"]: r["len"] for r in scores.group_by("column").len().iter_rows(named=True)}
        # Two rule columns on every response; factual on 12 probes, confabulation on 6, per target.
        assert counts == {"format_locked": 48, "phantom_skill_block": 48, "factual_hit": 24, "confabulated": 12}
        judged = scores.filter(pl.col("scorer") != "rule")
        assert len(judged) == 2 * (6 + 2) and judged["value"].null_count() == 0  # constrained JSON: all scored
        assert set(judged.filter(pl.col("column") == "confabulated")["scorer_version"]) == {"confab-v1"}
        table = pl.read_parquet(run / "probe_table.parquet")
        adapter_rows = table.filter(pl.col("model_label") == "tiny+a")
        assert set(adapter_rows["base_label"]) == {"tiny"} and adapter_rows["p"].is_not_null().all()
        assert (adapter_rows["n_paired"] == adapter_rows["n"]).all()
        assert table.filter(pl.col("model_label") == "tiny")["p"].is_null().all()
        manifest = json.loads((run / "manifest.json").read_text())["probes"]
        assert manifest["rubric"]["version"] == "confab-v1" and manifest["rules_version"] == "probe-rules-v1"

        # Resume: nothing generated or judged again.
        again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
        assert again.returncode == 0, again.stderr[-2000:]
        second = json.loads(again.stdout.strip().splitlines()[-1])
        assert second["scores"] == len(scores)
        assert len((run / "episodes.jsonl").read_text().splitlines()) == 48
        assert len((run / "probe_scores.jsonl").read_text().splitlines()) == len(scores)
    finally:
        registry.unload(adapter.served_name)
    title, head, rows, _ = probe_table(run)
    assert head == ["model", "format-locked", "factual hit", "trick confab", "phantom skill block"]
    assert [r[0] for r in rows] == ["tiny", "tiny+a"] and "vs base" in rows[1][1]


def test_report_carries_the_probe_table(tmp_path):
    from harness.judging.job import JudgeRequest, run_judging
    from harness.report import render_report

    from test_judging import _synthetic_run

    run, _ = _synthetic_run(tmp_path)
    run_judging(JudgeRequest(run=str(run), mode="deterministic"))
    (run / "probes").mkdir()
    row = {"model_label": "m1", "base_label": None, "column": "format_locked", "n": 24, "positives": 3,
           "unscored": 0, "rate": 0.125, "a": None, "b": None, "c": None, "d": None, "p": None, "method": None,
           "n_paired": None}
    pl.DataFrame([row], schema_overrides={"base_label": pl.Utf8, "a": pl.Int64, "b": pl.Int64, "c": pl.Int64,
                                          "d": pl.Int64, "p": pl.Float64, "method": pl.Utf8, "n_paired": pl.Int64}
                 ).write_parquet(run / "probes" / "probe_table.parquet")
    out = render_report(run)
    for file in (out["report_md"], out["report_html"]):
        text = Path(file).read_text()
        assert "Generality probe (cf. Table 8)" in text and "3/24 (0.12)" in text


def test_sweep_config_probes_block(tmp_path):
    import yaml

    from jobs.sweep_config import ConfigError, load_config

    config = yaml.safe_load((ROOT / "eval_configs" / "demo.yaml").read_text())
    config.pop("probes", None)
    for adapter in config["models"][0]["adapters"]:  # paths are relative to the config file
        adapter["recipe"] = str(ROOT / "eval_configs" / adapter["recipe"])
    for block, message in [({"judge": "det"}, "probes.judge 'det' is not an LLM judge"),
                           ({"batery": "builtin"}, "field 'probes.batery'"),
                           ({"battery": str(tmp_path / "none.jsonl")}, "field 'probes.battery'.*file not found")]:
        file = tmp_path / "c.yaml"
        file.write_text(yaml.safe_dump({**config, "probes": block}))
        with pytest.raises(ConfigError, match=message):
            load_config(file)
    file.write_text(yaml.safe_dump({**config, "probes": {"judge": "local", "max_tokens": 128}}))
    assert load_config(file).probes.max_tokens == 128
