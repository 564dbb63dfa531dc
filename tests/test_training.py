"""Training on CPU with tiny-qwen3: template patch, corpus transforms, LoRA, partial FT, tracing."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from transformers import AutoTokenizer

from harness.bench import load_bench
from harness.client import Sampling
from harness.prompts import SOLVER_PROMPT, render
from serve.registry import AdapterRegistry
from serve.server import ServerSpec, VLLMServer
from train.corpus import CorpusRequest, build_corpus
from train.corpus_transforms import apply_transforms, read_corpus, write_corpus
from train.recipe import Recipe, RecipeError, load_recipe
from train.template import (
    CHATML_TRAINING_TEMPLATE,
    TemplatePatchError,
    assistant_mask_text,
    training_template,
    verify_mask,
)
from train.trainer import train_one

from conftest import SERVER_MAX_RANK

RECIPES = Path(__file__).resolve().parents[1] / "eval_configs" / "recipes"
LLAMA3_STYLE = ("{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                " + message['content'] + '<|eot_id|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tok(tiny):
    return AutoTokenizer.from_pretrained(tiny.location)


def corpus_rows(condition="curated"):
    bench = load_bench("builtin")
    rows = []
    for task in bench.split("train"):
        prompt = render(bench, task, condition)
        rows.append({"messages": [*prompt.messages, {"role": "assistant",
                                                     "content": f"Step by step, the procedure applies.\nANSWER: {task.expected}"}],
                     "meta": {"task_uid": task.uid, "skill": task.skill, "condition": condition,
                              "solver_prompt": SOLVER_PROMPT, "skill_block": prompt.skill_block}})
    return rows


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "toy.jsonl"
    write_corpus(corpus_rows() + corpus_rows("baseline"), path)
    return path


# ------------------------------------------------------------------ chat template

@pytest.mark.parametrize("model", ["local:tiny-qwen3", "local:smollm2-135m-instruct"])
def test_patched_template_masks_exactly_the_assistant_turns(model):
    from harness.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(model).location)
    template = training_template(tokenizer)
    verify_mask(tokenizer, template)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A one"}, {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A two\nANSWER: yes"}]
    spans, mask = assistant_mask_text(tokenizer, messages, template)
    assert spans == ["A one<|im_end|>", "A two\nANSWER: yes<|im_end|>"]
    # The patched template renders exactly what the original renders.
    assert tokenizer.apply_chat_template(messages, tokenize=False) == \
        tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    assert 0 < sum(mask) < len(mask)


def test_llama3_style_template_is_patched(tok):
    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok.chat_template = LLAMA3_STYLE
    template = training_template(tok)
    verify_mask(tok, template)
    spans, _ = assistant_mask_text(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ok"}],
                                   template)
    assert spans == ["ok<|eot_id|>"]


def test_unpatchable_template_is_refused_with_the_way_out(tok):
    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    with pytest.raises(TemplatePatchError, match="chat_template: chatml"):
        training_template(tok)
    verify_mask(tok, CHATML_TRAINING_TEMPLATE)


# ------------------------------------------------------------------ corpus transforms

def test_corpus_transforms(tmp_path):
    rows = corpus_rows() + corpus_rows("baseline")
    n = len(corpus_rows())
    cur = apply_transforms(rows, [{"kind": "curated-only"}])
    assert len(cur) == n and all("## Skill:" in r["messages"][0]["content"] for r in cur)
    mixed = apply_transforms(rows, [{"kind": "mixed"}])
    assert len(mixed) == 2 * n
    assert sum("## Skill:" in r["messages"][0]["content"] for r in mixed) == n
    assert {r["meta"]["condition"] for r in mixed} == {"curated", "baseline"}
    stripped = apply_transforms(rows, [{"kind": "curated-only"}, {"kind": "strip-skill-block"}])
    assert len(stripped) == n and all(r["messages"][0]["content"] == SOLVER_PROMPT for r in stripped)
    assert [r["messages"][1:] for r in stripped] == [r["messages"][1:] for r in cur]

    # drop-ceiling-skills reads a run: skills whose baseline pass rate is at the threshold go.
    run = tmp_path / "pre"
    run.mkdir()
    skills = sorted({r["meta"]["skill"] for r in cur})
    pl.DataFrame([{"cell_id": f"c{i}", "model_label": "base", "judge_label": "j", "condition": "baseline",
                   "skill": s, "passed": i < 2} for i, s in enumerate(skills)]).write_parquet(run / "verdicts.parquet")
    dropped = apply_transforms(rows, [{"kind": "curated-only"},
                                      {"kind": "drop-ceiling-skills", "run": str(run), "model_label": "base"}])
    assert {r["meta"]["skill"] for r in dropped} == set(skills[2:])

    # generic-control: as many rows, matched in assistant length, reproducible by seed.
    generic = tmp_path / "generic.jsonl"
    write_corpus([{"messages": [{"role": "user", "content": f"q{i}"},
                                {"role": "assistant", "content": "x" * (20 + i // 2)}]} for i in range(500)], generic)
    control = apply_transforms(rows, [{"kind": "curated-only"}, {"kind": "generic-control", "source": str(generic)}])
    assert len(control) == n and all("## Skill:" not in json.dumps(r["messages"]) for r in control)
    lengths = sorted(len(r["messages"][-1]["content"]) for r in control)
    targets = sorted(len(r["messages"][-1]["content"]) for r in cur)
    assert max(abs(a - b) for a, b in zip(lengths, targets, strict=True)) <= 3
    assert control == apply_transforms(rows, [{"kind": "curated-only"}, {"kind": "generic-control",
                                                                         "source": str(generic)}])
    small = tmp_path / "small.jsonl"
    write_corpus([{"messages": [{"role": "assistant", "content": "x"}]}] * 3, small)
    with pytest.raises(ValueError, match="has 3 rows, fewer than the 16 to match"):
        apply_transforms(rows, [{"kind": "curated-only"}, {"kind": "generic-control", "source": str(small)}])


def test_shipped_recipes_validate_and_bad_ones_name_the_field(tmp_path):
    names = {load_recipe(p).name for p in RECIPES.glob("*.yaml")}
    assert {"v1", "v1_5", "v1_6", "v1_7", "v1_8", "v1_9", "v2_0", "generic-control"} <= names
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase_model: local:tiny-qwen3\ncorpus: c.jsonl\nlora: {rank: 8}\n")
    with pytest.raises(RecipeError, match=r"field 'lora.rank': Extra inputs"):
        load_recipe(bad)
    bad.write_text("name: x\nbase_model: m\ncorpus: c\ntransforms: [{kind: shuffle}]\n")
    with pytest.raises(RecipeError, match=r"field 'transforms.0.kind': 'shuffle'"):
        load_recipe(bad)


# ------------------------------------------------------------------ LoRA and partial fine-tuning

@pytest.fixture(scope="module")
def lora_adapter(corpus_file, tmp_path_factory):
    recipe = load_recipe(RECIPES / "smoke-lora.yaml")
    out = tmp_path_factory.mktemp("trained") / "smoke-lora-s0"
    meta = train_one(recipe, 0, out, corpus=str(corpus_file))
    return out, meta


def test_lora_lowers_loss_and_records_meta(lora_adapter):
    out, meta = lora_adapter
    curve = meta.loss_curve
    assert len(curve) == meta.steps >= 6 and not meta.skipped
    assert sum(curve[-2:]) / 2 < sum(curve[:2]) / 2
    saved = json.loads((out / "training_meta.json").read_text())
    assert saved == json.loads(json.dumps(meta.as_dict(), default=str))  # the file is the summary's as_dict()
    assert saved["loss_curve"] == curve and saved["corpus_rows"] == 16 and saved["seed"] == 0
    assert saved["device"] == "cpu" and len(saved["content_hash"]) == 64 and saved["base_identity"] == "local:tiny-qwen3"


def test_trained_adapter_loads_and_changes_output(server, tiny, lora_adapter):
    out, meta = lora_adapter
    registry = AdapterRegistry(server.api_base, tiny, "tiny", SERVER_MAX_RANK)
    loaded, report = registry.load("trained", out)
    try:
        assert loaded.served_name == f"trained-{meta.content_hash[:12]}"
        assert not report.identical
    finally:
        registry.unload(loaded.served_name)


@pytest.mark.training
@pytest.mark.vllm
def test_partial_finetune_checkpoint_is_served_by_vllm(corpus_file, tmp_path):
    from harness.client import Sampling, build_messages, chat

    recipe = Recipe(name="partial", base_model="local:tiny-qwen3", method="partial", corpus=str(corpus_file),
                    partial={"top_k_layers": 1}, training={"learning_rate": 1e-3, "epochs": 1, "batch_size": 4,
                                                           "max_length": 1024})
    meta = train_one(recipe, 0, tmp_path / "partial")
    assert meta.optimizer == "adamw_torch" and meta.trainable_params and meta.trainable_params > 0
    assert not (tmp_path / "partial" / "adapter_config.json").exists()
    spec = ServerSpec(model=str(tmp_path / "partial"), served_name="partial", max_model_len=1024)
    with VLLMServer(spec) as srv:
        reply = chat(srv.api_base, "partial", build_messages("Is this valid?"), Sampling(max_tokens=8))
        assert reply.completion_tokens == 8


@pytest.mark.training
def test_train_cli(corpus_file, tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness.cli", "train", str(RECIPES / "smoke-lora.yaml"),
                             "--corpus", str(corpus_file), "--seed", "3", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["seed"] == 3 and (tmp_path / "smoke-lora-s3" / "adapter_model.safetensors").is_file()


# ------------------------------------------------------------------ teacher tracing

def test_corpus_work_run_is_written_and_read_beside_a_bare_out(tmp_path, monkeypatch):
    """`corpus build --out x.jsonl`: generation and judging write the work run where build_corpus
    reads it (./x.run, beside the corpus), not results/x.run. The two jobs are stand-ins that
    resolve their run as the real ones do (run_dir)."""
    import train.corpus as corpus
    from harness.generation_job import GenerationSummary
    from harness.judging.job import JudgingSummary
    from harness.runstore import run_dir

    monkeypatch.chdir(tmp_path)
    bench = load_bench("builtin")
    tasks = bench.split("train")

    def generation(req):
        folder = run_dir(req.run)
        folder.mkdir(parents=True, exist_ok=True)
        pl.DataFrame([{"cell_id": t.uid, "task_uid": t.uid, "skill": t.skill,
                       "prompt_hash": render(bench, t, "curated").hash, "response": f"ANSWER: {t.expected}"}
                      for t in tasks]).write_parquet(folder / "episodes.parquet")
        return GenerationSummary(str(folder))

    def judging(req):
        folder = run_dir(req.run)
        (pl.read_parquet(folder / "episodes.parquet")
         .select("cell_id", "task_uid", pl.lit(req.label).alias("judge_label"),
                 (pl.col("cell_id") + "-v").alias("verdict_id"), pl.lit(True).alias("passed"))
         .write_parquet(folder / "verdicts.parquet"))
        return JudgingSummary(str(folder), req.label)

    monkeypatch.setattr(corpus, "run_generation", generation)
    monkeypatch.setattr(corpus, "run_judging", judging)
    summary = build_corpus(CorpusRequest(teacher="t", teacher_url="http://127.0.0.1:1", out=Path("x.jsonl")))
    assert (tmp_path / "x.run" / "verdicts.parquet").is_file() and not (tmp_path / "results").exists()
    assert summary.rows == len(tasks) == len(read_corpus(tmp_path / "x.jsonl"))
    assert json.loads((tmp_path / "x.meta.json").read_text()) == summary.as_dict()


def test_teacher_tracing_keeps_only_judge_passing_rows(server, tmp_path):
    out = tmp_path / "corpus.jsonl"
    summary = build_corpus(CorpusRequest(teacher="tiny", teacher_url=server.base_url, out=out,
                                         judge="hosted_vllm/tiny", judge_api_base=server.api_base,
                                         sampling=Sampling(max_tokens=16)))
    rows = read_corpus(out)
    verdicts = pl.read_parquet(tmp_path / "corpus.run" / "verdicts.parquet")
    passing = set(verdicts.filter(pl.col("passed") == True)["task_uid"])  # noqa: E712
    assert {r["meta"]["task_uid"] for r in rows} == passing and len(rows) == summary.rows == len(passing)
    assert summary.traces == len(load_bench("builtin").split("train"))
    assert 0 < len(rows) < summary.traces  # the judge kept some and rejected or left unscored others
    for row in rows:
        system, user, assistant = row["messages"]
        assert system["content"].startswith(SOLVER_PROMPT) and row["meta"]["skill_block"] in system["content"]
        assert row["meta"]["teacher"] == "tiny" and row["meta"]["verdict_id"]
    assert json.loads(out.with_suffix(".meta.json").read_text())["rows"] == len(rows)
