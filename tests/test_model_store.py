import json
import os
import subprocess
import sys

import pytest

from harness.models import ModelNotFound, list_models, model_identity, prepare, resolve
from harness.models.store import MARKER


def test_prepare_tiny_is_idempotent_and_listed(tmp_path):
    path = prepare("tiny-qwen3", tmp_path)
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    marker = json.loads((path / MARKER).read_text())
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert prepare("tiny-qwen3", tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp, "second prepare rebuilt"
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == 64 and config["architectures"] == ["Qwen3ForCausalLM"]
    entry = {e.name: e for e in list_models(tmp_path)}["tiny-qwen3"]
    assert entry.prepared and entry.size_bytes == marker["size_bytes"] > 0


def test_tiny_build_is_reproducible(tmp_path):
    a = prepare("tiny-qwen3", tmp_path / "one")
    b = prepare("tiny-qwen3", tmp_path / "two")
    fp = [json.loads((p / MARKER).read_text())["fingerprint"] for p in (a, b)]
    assert fp[0] == fp[1]


def test_tiny_chat_template_is_chatml(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.location)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_models_list_json_cli(tmp_path):
    prepare("tiny-qwen3", tmp_path)
    env = {**os.environ, "SKILLSWEEP_MODELS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "harness.cli", "models", "list", "--json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["tiny-qwen3"]["prepared"] and rows["tiny-qwen3"]["size_bytes"] > 0
    assert rows["tiny-qwen3"]["path"] == str(tmp_path / "tiny-qwen3")
    assert rows["smollm2-135m-instruct"]["prepared"] is False


def test_smollm2_from_wheel():
    model = resolve("local:smollm2-135m-instruct")
    config = json.loads((model.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert model.identity == "local:smollm2-135m-instruct"


@pytest.mark.parametrize("ref, needle", [
    ("local:no-such-model", "known: smollm2-135m-instruct, tiny-qwen3"),
    ("Qwen/Qwen3.5-4B", "hub model 'Qwen/Qwen3.5-4B' is not available here"),
    ("./not/a/model", "neither local:<name>, an existing path, nor a hub id"),
])
def test_resolve_errors_name_the_reference(ref, needle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as info:
        resolve(ref)
    assert needle in str(info.value)


def test_path_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve(str(tmp_path))


def test_identity_of_paths(tmp_path, tiny):
    assert model_identity(tiny.location) == "local:tiny-qwen3"
    snap = tmp_path / "hub" / "models--Qwen--Qwen3.5-4B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert model_identity(snap) == "Qwen/Qwen3.5-4B"
    assert model_identity("Qwen/Qwen3.5-4B") == "Qwen/Qwen3.5-4B"
    plain = tmp_path / "ckpt"
    plain.mkdir()
    assert model_identity(plain) == plain.resolve().as_posix()
