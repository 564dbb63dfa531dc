"""Bench authoring: a real local teacher end to end, and scripted faulty teacher replies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from harness.authoring.dedup import near_duplicates
from harness.authoring.job import AuthorRequest, allocate_query_types, run_authoring, split_of
from harness.bench import load_bench
from harness.bench.model import BenchError, QueryType
from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.retry import RetryPolicy

from fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[1]
SKILLS = [
    {"name": "base-rate-check", "category": "probabilistic",
     "description": "Weigh evidence against how common the outcome is before anything is observed."},
    {"name": "straw-man-spotting", "category": "rhetorical",
     "description": "Notice when an argument attacks a distorted version of the opposing claim."},
    {"name": "false-belief-tracking", "category": "theory-of-mind",
     "description": "Track what each person believes, given what they saw, not what is true."},
]


def _skills_file(tmp_path: Path, skills=SKILLS) -> Path:
    file = tmp_path / "skills.jsonl"
    file.write_text("".join(json.dumps(s) + "\n" for s in skills))
    return file


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)


def test_author_three_skills_with_a_local_teacher_then_generate_on_it(server, tmp_path):
    out = tmp_path / "authored"
    # Greedy, retries sampled without a seed: vLLM's CPU build crashes on seeded sampling.
    args = ["bench", "author", str(_skills_file(tmp_path)), "--out", str(out), "--teacher", "tiny",
            "--teacher-url", server.base_url, "--tasks-per-skill", "6", "--max-tokens", "3000",
            "--max-attempts", "4", "--seed", "3", "--temperature", "0",
            "--no-sampling-seed"]
    done = _cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # Constrained decoding keeps even a random teacher's replies valid.
    assert summary["failed"] == [] and summary["skills"] == 3
    assert summary["tasks"] + summary["duplicates_removed"] == 18
    bench = load_bench(str(out))
    assert set(bench.skills) == {s["name"] for s in SKILLS}
    for skill in bench.skills.values():
        assert len(skill.procedure) >= 3 and skill.example_positive and skill.example_negative
        tasks = [t for t in bench.tasks if t.skill == skill.name]
        assert {t.split for t in tasks} == {"train", "eval"}  # every skill in both splits
    assert not {t.uid for t in bench.split("train")} & {t.uid for t in bench.split("eval")}
    assert all(t.expected in ("yes", "no") for t in bench.tasks if t.query_type == QueryType.YES_NO)
    assert all(len(t.expected.split()) == 1 for t in bench.tasks if t.query_type == QueryType.SINGLE_WORD)
    manifest = json.loads((out / "manifest.json").read_text())
    auth = manifest["authoring"]
    assert auth["teacher"] == "tiny" and auth["prompts"]["tasks"]["version"] == "tasks-v1"
    assert re.fullmatch(r"[0-9a-f]{64}", auth["prompts"]["rewrite"]["sha256"])
    assert manifest["bench"]["hash"] == bench.content_hash() and auth["counts"]["failed_units"] == 0

    # Idempotent: a second run calls the teacher for nothing and writes the same bench.
    again = _cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["stats"]["calls"] == 0 and second["stats"]["reused"] == 21
    assert second["bench_hash"] == summary["bench_hash"]

    result = run_generation(GenerateRequest(run=str(tmp_path / "gen"), model="tiny", url=server.base_url,
                                            bench=str(out), split="eval", conditions=["baseline", "curated"],
                                            sampling=Sampling(max_tokens=8)))
    episodes = pl.read_parquet(tmp_path / "gen" / "episodes.parquet")
    assert result.missing == 0 and len(episodes) == 2 * len(bench.split("eval"))
    assert set(episodes["task_uid"]) == {t.uid for t in bench.split("eval")}


def _task_reply(skill: str, index: int, query_type: str) -> dict:
    expected = {"YES_NO": "yes", "SINGLE_WORD": "seven", "RANKING": "A > B", "FREE_FORM": "It holds."}[query_type]
    return {"title": f"{skill} {index}", "difficulty": "easy", "trap": "none",
            "passage": f"In the {skill} case number {index}, a distinct story about person {index * 7} in town "
                       f"{skill[:4]}{index} unfolds with particular details {index ** 2}.",
            "question": f"What follows for case {index} of {skill}?", "expected": expected,
            "must_identify": ["the point"], "correct_conclusion": "The point holds."}


REWRITE = {"procedure": ["Look.", "Compare.", "Decide."], "when_to_use": "Always.", "constraints": ["Be careful."],
           "example_positive": "A case.", "example_negative": "Another case."}


@pytest.mark.slow
def test_invalid_truncated_and_duplicated_teacher_replies(tmp_path):
    """Invalid replies are retried, a reply truncated every time is reported as a failed unit,
    duplicated replies are removed with the pair reported; a re-run fills in only what failed."""
    skills_file = _skills_file(tmp_path)
    seen: Counter = Counter()
    mode = {"healthy": False}

    def reply(request: dict):
        user = request["messages"][1]["content"]
        schema = request["response_format"]["json_schema"]
        if schema["name"] == "rewrite":
            name = re.search(r"Skill name: (\S+)", user)[1]
            seen[("rewrite", name)] += 1
            if name == "straw-man-spotting" and seen[("rewrite", name)] == 1:
                return "Sure! Here is the procedure: first you look, then you decide."  # no JSON: retried
            return json.dumps(REWRITE)
        name = re.search(r"## Skill: (\S+)", user)[1]
        index = int(re.search(r"Write task number (\d+)", user)[1])
        qtype = re.search(r"Query type: (\w+)\.", user)[1]
        seen[("task", name, index)] += 1
        body = json.dumps(_task_reply(name, index, qtype))
        if name == "base-rate-check" and index == 2 and not mode["healthy"]:
            return body[: len(body) // 2], "length"  # truncated on every attempt: reported
        if name == "false-belief-tracking" and index == 1 and seen[("task", name, index)] == 1:
            return json.dumps({**_task_reply(name, index, qtype), "question": ""})  # schema-invalid: retried
        if name == "false-belief-tracking" and index == 4:
            return json.dumps(_task_reply(name, 3, qtype))  # the same task again: a duplicate
        return body

    out = tmp_path / "bench"
    policy = RetryPolicy(max_attempts=3, timeout_s=5, base_delay_s=0.01, max_delay_s=0.02)
    with FaultServer(reply=reply) as fake:
        request = AuthorRequest(skills_file=skills_file, out=out, teacher="fault", teacher_url=fake.api_base.removesuffix("/v1"),
                                tasks_per_skill=5, max_attempts=3, policy=policy)
        first = run_authoring(request)
        assert seen[("rewrite", "straw-man-spotting")] == 2  # retried after the non-JSON reply
        assert seen[("task", "false-belief-tracking", 1)] == 2  # retried after the invalid reply
        assert first["stats"]["invalid_replies"] == 2 and first["stats"]["truncated_replies"] == 3
        assert [(f["skill"], f["index"]) for f in first["failed"]] == [("base-rate-check", 1)]
        assert "truncated" in first["failed"][0]["errors"][-1]
        assert [(d["kept"], d["removed"]) for d in first["duplicates"]] in (
            [("false-belief-tracking-t03", "false-belief-tracking-t04")],
            [("false-belief-tracking-t04", "false-belief-tracking-t03")])
        assert first["duplicates"][0]["similarity"] == 1.0
        bench = load_bench(str(out))
        uids = {t.uid for t in bench.tasks}
        assert "base-rate-check-t02" not in uids and len(uids) == 13
        manifest = json.loads((out / "manifest.json").read_text())["authoring"]
        assert manifest["failed"][0]["skill"] == "base-rate-check" and manifest["dedup"]["pairs"]
        journal = [json.loads(line) for line in (out / "authoring.jsonl").read_text().splitlines()]
        assert Counter(r["status"] for r in journal) == {"ok": 17, "failed": 1}

        # Resume: only the failed unit goes to the teacher again; nothing else is lost or redone.
        mode["healthy"] = True
        before = sum(seen.values())
        second = run_authoring(request)
        assert sum(seen.values()) - before == 1 and second["stats"]["reused"] == 17
        assert second["failed"] == [] and second["tasks"] == 14
        assert {t.uid for t in load_bench(str(out)).tasks} == uids | {"base-rate-check-t02"}


def test_query_type_mix_split_and_dedup_are_deterministic():
    types = allocate_query_types(600, {"YES_NO": 0.61, "FREE_FORM": 0.165, "SINGLE_WORD": 0.115, "RANKING": 0.11}, 0)
    assert Counter(t.value for t in types) == {"YES_NO": 366, "FREE_FORM": 99, "SINGLE_WORD": 69, "RANKING": 66}
    assert types == allocate_query_types(600, {"YES_NO": 0.61, "FREE_FORM": 0.165, "SINGLE_WORD": 0.115,
                                                "RANKING": 0.11}, 0)
    split = split_of("s", 15, 1 / 3, seed=0)
    assert Counter(split.values()) == {"train": 10, "eval": 5} and split == split_of("s", 15, 1 / 3, seed=0)
    assert split != split_of("s", 15, 1 / 3, seed=1)
    text = "the quick brown fox jumps over the lazy dog near the river bank today"
    pairs = near_duplicates([("a", text), ("b", "a completely different sentence about tax law and rules"),
                             ("c", text + " again")], threshold=0.7)
    assert [(p.kept, p.removed) for p in pairs] == [("a", "c")]


def test_bad_skill_file_names_the_line_and_field(tmp_path):
    file = _skills_file(tmp_path, SKILLS[:1] + [{"name": "Bad Name", "category": "x", "description": "y"}])
    with pytest.raises(BenchError, match=r"skills.jsonl, record line 2 \(Bad Name\), field 'name'"):
        run_authoring(AuthorRequest(skills_file=file, out=tmp_path / "b", teacher="t", teacher_url="http://127.0.0.1:9"))
    assert not (tmp_path / "b").exists()


def test_every_reply_schema_compiles_for_a_local_vllm_teacher(tiny):
    """xgrammar (vLLM's structured-output backend) refuses some valid schemas; a refusal is a
    500 for every unit, so each schema the author sends is compiled here first."""
    import xgrammar
    from transformers import AutoTokenizer

    from harness.authoring.schema import REWRITE_SCHEMA, task_schema

    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(
        AutoTokenizer.from_pretrained(tiny.location)))
    for schema in [REWRITE_SCHEMA] + [task_schema(q) for q in QueryType]:
        compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
