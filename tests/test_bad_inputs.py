"""Bad inputs through the command line, as a user types them: each is refused with one line
that names the option, file, record or field, an exit code that means something, no
traceback, and nothing already in the run folder changed.

Exit codes (harness.errors): 0 done, 1 incomplete (it ran; re-run to finish), 2 refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from harness.bench import load_bench
from harness.prompts import render
from harness.runstore import RunStore

ROOT = Path(__file__).resolve().parents[1]
# One CLI subprocess per case (about a second each): the slow tier, not `make test-fast`.
pytestmark = pytest.mark.slow
BUILTIN = ROOT / "harness" / "bench" / "builtin"


def _closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ctx:
    """Everything a case may point at, made fresh for each case."""

    tmp: Path
    run: Path  # a run with episodes (journal, table, manifest) and one LLM verdict set
    port: int  # closed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bench(self, skills: bytes | None = None, tasks: bytes | None = None) -> Path:
        """A copy of the built-in bench, with either file replaced."""
        folder = self.tmp / "bench"
        shutil.copytree(BUILTIN, folder)
        for name, data in (("skills.jsonl", skills), ("tasks.jsonl", tasks)):
            if data is not None:
                (folder / name).write_bytes(data)
        return folder

    def config(self, text: str, name: str = "sweep.yaml") -> Path:
        folder = self.tmp / "configs"
        (folder / "recipes").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "eval_configs" / "recipes" / "smoke-lora.yaml", folder / "recipes" / "smoke-lora.yaml")
        path = folder / name
        path.write_text(text)
        return path


def _sweep(**overrides) -> str:
    """A valid sweep config (recipe path relative to the config file), with fields replaced."""
    fields = {
        "name": "x",
        "conditions": "[baseline, curated]",
        "models": "[{label: tiny, base: local:tiny-qwen3, adapters: [{recipe: recipes/smoke-lora.yaml, seeds: [0]}]}]",
        "judges": "[{label: det, mode: deterministic}]",
    }
    fields.update(overrides)
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def _last(*steps):
    """Setup steps, then the arguments: ``lambda c: _last(step(c), args(c))``."""
    return steps[-1]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tasks_with_byte(bad: bytes, line: int) -> bytes:
    lines = (BUILTIN / "tasks.jsonl").read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1][:40] + bad + lines[line - 1][40:]
    return b"\n".join(lines)


def _eval_only_tasks() -> bytes:
    lines = (BUILTIN / "tasks.jsonl").read_bytes().splitlines()
    return b"\n".join(x for x in lines if json.loads(x)["split"] == "eval") + b"\n"


@dataclass
class Case:
    id: str
    args: Callable[[Ctx], list[str]]
    code: int
    says: list[str]  # each must appear in the output; "{url}", "{run}", "{tmp}" are filled in
    cwd: Callable[[Ctx], Path] | None = None
    check: Callable[[Ctx, str], None] | None = None  # more assertions on the run afterwards
    refuses: list[str] = field(default_factory=list)  # must not appear in the output


def _gen(ctx: Ctx, *extra: str) -> list[str]:
    return ["generate", "--model", "tiny", "--url", ctx.url, "--run", str(ctx.run), *extra]


def _judge(ctx: Ctx, *extra: str) -> list[str]:
    return ["judge", str(ctx.run), *extra]


def _verdicts(ctx: Ctx) -> pl.DataFrame:
    return pl.read_parquet(ctx.run / "verdicts.parquet")


def _rebuilt_and_judged(ctx: Ctx, output: str) -> None:
    episodes = pl.read_parquet(ctx.run / "episodes.parquet")
    assert len(episodes) == N_EPISODES  # rebuilt from the journal
    assert (_verdicts(ctx)["judge_label"] == "deterministic").sum() == N_EPISODES


def _all_unscored_by_connection(ctx: Ctx, output: str) -> None:
    new = _verdicts(ctx).filter(pl.col("judge_label") == "dead")
    assert len(new) == N_EPISODES and new["passed"].null_count() == N_EPISODES
    assert new["unscored_reason"].str.contains("connection").all(), new["unscored_reason"].to_list()


def _no_run_folder(ctx: Ctx, output: str) -> None:
    assert not (ctx.tmp / "fresh").exists()


CASES = [
    # 1. concurrency 0 hung; -1 printed asyncio's semaphore message.
    Case("generate-concurrency-0", lambda c: _gen(c, "--concurrency", "0"), 2, ["--concurrency 0", ">= 1"]),
    Case("generate-concurrency-negative", lambda c: _gen(c, "--concurrency", "-1"), 2, ["--concurrency -1"],
         refuses=["Semaphore"]),
    Case("judge-concurrency-0", lambda c: _judge(c, "--mode", "deterministic", "--concurrency", "0"), 2,
         ["--concurrency 0"]),
    # 2. a dead server: one line naming the URL (probe did; generate showed a traceback).
    Case("generate-dead-url", lambda c: _gen(c), 2, ["cannot reach a vLLM server at http://127.0.0.1:{port}"]),
    Case("generate-dead-url-new-run",
         lambda c: ["generate", "--model", "tiny", "--url", c.url, "--run", str(c.tmp / "fresh")], 2,
         ["http://127.0.0.1:{port}"], check=_no_run_folder),
    Case("probe-dead-url", lambda c: ["probe", "hi", "--url", c.url, "--model", "tiny"], 2,
         ["http://127.0.0.1:{port}"]),
    Case("adapters-list-dead-url", lambda c: ["adapters", "list", "--url", c.url], 2, ["http://127.0.0.1:{port}"]),
    # 3. empty bench files, an empty split.
    Case("empty-tasks", lambda c: _gen(c, "--bench", str(c.bench(tasks=b""))), 2,
         ["{tmp}/bench/tasks.jsonl", "no records"]),
    Case("empty-bench", lambda c: _gen(c, "--bench", str(c.bench(skills=b"", tasks=b"\n"))), 2,
         ["{tmp}/bench/skills.jsonl", "no records"]),
    Case("empty-split", lambda c: _gen(c, "--bench", str(c.bench(tasks=_eval_only_tasks())), "--split", "train"), 2,
         ["split 'train'", "splits present: eval"]),
    Case("unknown-split", lambda c: _gen(c, "--split", "test"), 2, ["--split 'test'", "eval or train or all"]),
    # 4. a config's recipe resolves beside the config, from any directory.
    Case("plan-from-elsewhere", lambda c: ["plan", str(ROOT / "eval_configs" / "smoke.yaml")], 0, ["cells: 128"],
         cwd=lambda c: c.tmp),
    Case("plan-relative-recipe", lambda c: ["plan", str(c.config(_sweep()))], 0, ["cells: 128"],
         cwd=lambda c: c.tmp),
    Case("plan-missing-recipe",
         lambda c: ["plan", str(c.config(_sweep(models="[{label: a, base: local:tiny-qwen3, "
                                                      "adapters: [{recipe: nope.yaml}]}]")))], 2,
         ["{tmp}/configs/sweep.yaml", "models.0.adapters.0.recipe", "{tmp}/configs/nope.yaml"]),
    # 5. a byte that is not UTF-8: file and record named.
    Case("non-utf8-task", lambda c: _gen(c, "--bench", str(c.bench(tasks=_tasks_with_byte(b"\xff", 7)))), 2,
         ["{tmp}/bench/tasks.jsonl", "record line 7", "not valid UTF-8", "0xff"]),
    Case("non-utf8-skill", lambda c: _gen(c, "--bench", str(c.bench(skills=b'{"name": "\xfe"}\n'))), 2,
         ["{tmp}/bench/skills.jsonl", "record line 1", "not valid UTF-8"]),
    Case("non-utf8-config", lambda c: ["plan", str(_write(c.tmp / "bad.yaml", b"name: x\xff\n"))], 2,
         ["{tmp}/bad.yaml", "cannot read config"]),
    # 6. plan accepted an unknown local model, negative seeds, repeated conditions.
    Case("plan-unknown-local-model",
         lambda c: ["plan", str(c.config(_sweep(models="[{label: a, base: local:no-such-model}]")))], 2,
         ["sweep.yaml", "models.0.base", "no-such-model", "known: "]),
    Case("plan-negative-seed",
         lambda c: ["plan", str(c.config(_sweep(models="[{label: a, base: local:tiny-qwen3, adapters: "
                                                      "[{recipe: recipes/smoke-lora.yaml, seeds: [-1]}]}]")))], 2,
         ["sweep.yaml", "models.0.adapters.0.seeds.0", "greater than or equal to 0"]),
    Case("plan-repeated-seed",
         lambda c: ["plan", str(c.config(_sweep(models="[{label: a, base: local:tiny-qwen3, adapters: "
                                                      "[{recipe: recipes/smoke-lora.yaml, seeds: [1, 1]}]}]")))], 2,
         ["sweep.yaml", "models.0.adapters.0.seeds", "more than once"]),
    Case("plan-repeated-condition", lambda c: ["plan", str(c.config(_sweep(conditions="[baseline, baseline]")))], 2,
         ["sweep.yaml", "field 'conditions'", "baseline listed more than once"]),
    Case("plan-repeated-recipe",
         lambda c: ["plan", str(c.config(_sweep(models="[{label: a, base: local:tiny-qwen3, adapters: "
                                                      "[{recipe: recipes/smoke-lora.yaml}, "
                                                      "{recipe: ./recipes/smoke-lora.yaml}]}]")))], 2,
         ["sweep.yaml", "a+smoke-lora@s0", "more than once"]),
    Case("plan-missing-file", lambda c: ["plan", str(c.tmp / "absent.yaml")], 2, ["{tmp}/absent.yaml", "cannot read"]),
    # 7. the run table: rebuilt from the journal when missing or junk; junk without a journal named.
    Case("judge-junk-table", lambda c: _last((c.run / "episodes.parquet").write_bytes(b"not parquet"),
                                             _judge(c, "--mode", "deterministic")), 0, ['"verdicts"'], check=_rebuilt_and_judged),
    Case("judge-missing-table", lambda c: _last((c.run / "episodes.parquet").unlink(),
                                                _judge(c, "--mode", "deterministic")), 0, ['"verdicts"'], check=_rebuilt_and_judged),
    Case("judge-junk-table-no-journal", lambda c: _last((c.run / "episodes.parquet").write_bytes(b"junk"),
                                                        (c.run / "episodes.jsonl").unlink(),
                                                        _judge(c, "--mode", "deterministic")), 2,
         ["{run}/episodes.parquet", "unreadable", "no episodes.jsonl journal"]),
    Case("judge-junk-manifest", lambda c: _last((c.run / "manifest.json").write_text("{not json"),
                                                _judge(c, "--mode", "deterministic")), 2, ["{run}/manifest.json", "unreadable manifest"]),
    Case("judge-no-run", lambda c: ["judge", str(c.tmp / "nothing"), "--mode", "deterministic"], 2,
         ["{tmp}/nothing/episodes.parquet", "no episodes to judge"]),
    # 8. every judge call failed: non-zero, and a refused connection is called one.
    Case("judge-every-call-failed",
         lambda c: _judge(c, "--mode", "llm-only", "--judge-model", "hosted_vllm/x", "--api-base", c.url + "/v1",
                          "--judge-label", "dead", "--max-attempts", "1"), 1,
         ["every judge call failed", "--only-unscored"], check=_all_unscored_by_connection,
         refuses=["server_error", "Give Feedback"]),
    # 9. one verdict set, one judge.
    Case("judge-only-unscored-other-judge",
         lambda c: _judge(c, "--mode", "llm-only", "--judge-model", "hosted_vllm/b", "--judge-label", "set-a",
                          "--only-unscored"), 2,
         ["'set-a'", "hosted_vllm/a", "hosted_vllm/b", "another --judge-label"]),
    Case("judge-label-other-mode",
         lambda c: _judge(c, "--mode", "det-mixed", "--judge-model", "hosted_vllm/a", "--judge-label", "set-a"), 2,
         ["'set-a'", "llm-only", "det-mixed"]),
    # 10. options that can only fail every request; an empty prompt.
    Case("generate-max-tokens-0", lambda c: _gen(c, "--max-tokens", "0"), 2, ["--max-tokens 0", ">= 1"]),
    Case("probe-empty-prompt", lambda c: ["probe", "", "--url", c.url, "--model", "tiny"], 2,
         ["PROMPT ''", "non-empty"]),
    Case("probe-blank-prompt", lambda c: ["probe", "  ", "--url", c.url, "--model", "tiny"], 2, ["non-empty"]),
    # More of the same kind.
    Case("generate-repeated-condition", lambda c: _gen(c, "--conditions", "baseline,baseline"), 2,
         ["--conditions 'baseline,baseline'", "more than once"]),
    Case("generate-unknown-local-model",
         lambda c: ["generate", "--model", "local:no-such-model", "--run", str(c.run)], 2,
         ["no-such-model", "known: "]),
    Case("judge-timeout-0", lambda c: _judge(c, "--mode", "deterministic", "--timeout", "0"), 2, ["--timeout 0"]),
    Case("judge-unknown-mode", lambda c: _judge(c, "--mode", "sometimes"), 2, ["mode 'sometimes'"]),
    Case("serve-bad-port", lambda c: ["serve", "--model", "local:tiny-qwen3", "--port", "70000"], 2,
         ["--port 70000", "1-65535"]),
    Case("stats-no-verdicts", lambda c: ["stats", str(c.tmp / "nothing")], 2,
         ["{tmp}/nothing/verdicts.parquet", "no verdicts"]),
    Case("train-negative-seed", lambda c: ["train", str(ROOT / "eval_configs/recipes/smoke-lora.yaml"), "--seed", "-2"],
         2, ["--seed -2"]),
]

N_EPISODES = 8


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> Path:
    """A run as generate leaves it (journal, table, manifest) plus an LLM verdict set 'set-a'
    whose verdicts are unscored, as after a failed judge run."""
    bench = load_bench("builtin")
    run = tmp_path_factory.mktemp("template") / "run"
    tasks = [t for t in bench.split("eval")][:N_EPISODES // 2]
    with RunStore(run) as store:
        for task in tasks:
            for condition in ("baseline", "curated"):
                prompt = render(bench, task, condition)
                store.append({"cell_id": f"{task.uid}-{condition}", "run": "run", "model_label": "m",
                              "base_model": "m", "adapter_hash": None, "backend": "vllm", "task_uid": task.uid,
                              "skill": task.skill, "query_type": task.query_type.value, "condition": condition,
                              "temperature": 0.0, "max_tokens": 64, "repetition_penalty": 1.05,
                              "prompt_hash": prompt.hash, "response": f"ANSWER: {task.expected}",
                              "final": f"ANSWER: {task.expected}"})
        store.write_table()
        store.update_manifest(bench={"spec": "builtin"})
    with RunStore(run, "verdicts", "verdict_id", keep="last") as verdicts:
        verdicts.append({"verdict_id": "v0", "cell_id": f"{tasks[0].uid}-baseline", "judge_label": "set-a",
                         "mode": "llm-only", "judge_kind": "llm", "judge": "hosted_vllm/a", "passed": None,
                         "unscored_reason": "judge call failed: x"})
        verdicts.write_table()
    return run


def _snapshot(run: Path) -> dict[str, str]:
    """Every row-holding file of a run, by content."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())
            if p.is_file() and p.suffix in (".jsonl", ".parquet", ".json")}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template_run, tmp_path):
    ctx = Ctx(tmp=tmp_path, run=tmp_path / "run", port=_closed_port())
    shutil.copytree(template_run, ctx.run)
    args = case.args(ctx)
    journals = {n: h for n, h in _snapshot(ctx.run).items() if n.endswith(".jsonl")}
    before = _snapshot(ctx.run)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "COLUMNS": "250"}
    result = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                            env=env, cwd=case.cwd(ctx) if case.cwd else ROOT, timeout=170)
    output = result.stdout + result.stderr
    assert result.returncode == case.code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for text in case.says:
        assert text.format(url=ctx.url, port=ctx.port, run=ctx.run, tmp=tmp_path) in output, output[-3000:]
    for text in case.refuses:
        assert text not in output, output[-3000:]
    if case.code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr[-3000:]
    after = _snapshot(ctx.run) if ctx.run.exists() else {}
    if case.code == 2:  # refused: the run is exactly as it was
        assert after == before
    else:  # it ran: rows already journalled are still there, byte for byte
        for name in ("episodes.jsonl",):
            if name in journals:
                assert after.get(name) == journals[name]
    if case.check:
        case.check(ctx, output)
