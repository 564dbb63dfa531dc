"""The simulated LoRA training: its duration from the training model, a training_meta.json of
a real training's shape, and an adapter that skillsweep's checks and the simulated engine accept."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from harness.models import check_reference, resolve
from serve.adapters import inspect_adapter
from serve.registry import AdapterRegistry
from serve.server import VLLMServer
from serve.sim_engine import SimSpec
from serve.sim_model import TrainingModel, parse_size
from train.recipe import Recipe, load_recipe
from train.sim_training import SimTrainingError, sim_train_one
from train.trainer import TrainingSummary

RECIPES = Path(__file__).resolve().parent.parent / "eval_configs" / "recipes"
SCALE = 1e-4  # an 86 s training sleeps 9 ms


def test_sim_training_sleeps_the_model_and_writes_a_real_trainings_metadata(tmp_path):
    recipe = load_recipe(RECIPES / "v1.yaml")
    out = tmp_path / "v1-s0"
    started = time.monotonic()
    meta = sim_train_one(recipe, 0, out, model=recipe.base_model, size="0.8B", gpu="h100", time_scale=SCALE)
    wall = time.monotonic() - started
    duration = TrainingModel().duration_s("h100", parse_size("0.8B"), recipe.training.epochs)
    assert 80 < duration < 95 and wall >= duration * SCALE  # the README's 86 s for one 0.8B training
    assert meta.simulated and not meta.skipped and meta.simulation["duration_s"] == round(duration, 2)
    saved = json.loads((out / "training_meta.json").read_text())
    # Every field of a real training's metadata, and the file is the summary's as_dict().
    assert set(saved) == {f.name for f in fields(TrainingSummary)} - {"skipped"}
    assert saved == json.loads(json.dumps(meta.as_dict(), default=str))
    assert saved["recipe"] == recipe.model_dump() and saved["seed"] == 0 and saved["method"] == "lora"
    assert saved["base_model"] == saved["base_identity"] == "Qwen/Qwen3.5-0.8B" and saved["corpus_rows"] == 353
    info = inspect_adapter(out)
    assert (info.rank, info.alpha, info.target_modules) == (16, 32.0, ("all-linear",))
    assert info.base_model == "Qwen/Qwen3.5-0.8B" and info.content_hash == meta.content_hash
    assert info.weights_file.stat().st_size < 64 * 1024  # tiny
    # Another seed is another adapter (its own content hash), and a bigger corpus takes longer.
    other = sim_train_one(recipe, 1, tmp_path / "v1-s1", model=recipe.base_model, size="0.8B", gpu="h100",
                          time_scale=SCALE, corpus_rows=706)
    assert other.content_hash != meta.content_hash and other.simulation["duration_s"] > 1.9 * duration - 60


def test_a_simulated_training_counts_its_duration_from_when_it_began(tmp_path):
    # A sweep passes when it asked Ray for a training Ray could start at once: the modelled
    # start-up covers the process's start, so the time before this call is part of the duration.
    recipe = load_recipe(RECIPES / "v1.yaml")
    scale = 0.05  # 86 simulated seconds: 4.3 s
    began = time.time() - 3.0
    started = time.monotonic()
    meta = sim_train_one(recipe, 0, tmp_path / "v1-s0", model=recipe.base_model, size="0.8B", gpu="h100",
                         time_scale=scale, began=began)
    call = time.monotonic() - started
    modelled = meta.simulation["duration_s"] * scale
    assert meta.wall_s >= modelled - 0.01 and call < modelled - 1.5


def test_a_finished_simulated_training_is_read_back_without_sleeping(tmp_path):
    recipe = load_recipe(RECIPES / "v2_0.yaml")
    out = tmp_path / "v2_0-s0"
    first = sim_train_one(recipe, 0, out, model=recipe.base_model, size="4B", gpu="h100", time_scale=SCALE)
    started = time.monotonic()
    # At time scale 1 a new training would sleep 188 s.
    again = sim_train_one(recipe, 0, out, model=recipe.base_model, size="4B", gpu="h100", time_scale=1.0)
    assert time.monotonic() - started < 5
    assert again.skipped and again.as_dict() == first.as_dict()
    changed = recipe.model_copy(update={"training": recipe.training.model_copy(update={"epochs": 1})})
    redone = sim_train_one(changed, 0, out, model=recipe.base_model, size="4B", gpu="h100", time_scale=SCALE)
    assert not redone.skipped and redone.simulation["duration_s"] < first.simulation["duration_s"]


def test_a_bad_time_scale_is_refused(tmp_path):
    lora = Recipe(name="l", base_model="Qwen/Qwen3.5-0.8B", corpus="c.jsonl")
    with pytest.raises(SimTrainingError, match="time_scale"):
        sim_train_one(lora, 0, tmp_path / "l", model="Qwen/Qwen3.5-0.8B", size="0.8B", gpu="h100", time_scale=0)


def test_a_simulated_partial_fine_tune_is_a_checkpoint_the_sim_engine_serves(tiny, tmp_path):
    recipe = load_recipe(RECIPES / "v1_7.yaml")
    assert recipe.method == "partial"
    hub = sim_train_one(recipe, 0, tmp_path / "hub", model=recipe.base_model, size="0.8B", gpu="h100",
                        time_scale=SCALE)
    assert hub.method == "partial" and hub.optimizer == "adamw_bnb_8bit" and len(hub.content_hash) == 64
    assert check_reference(str(tmp_path / "hub")) == "path" and not (tmp_path / "hub" / "adapter_config.json").exists()
    # On a base that is here, its config and tokenizer come along, never the store's marker.
    out = tmp_path / "v1_7-s0"
    meta = sim_train_one(recipe, 0, out, model="local:tiny-qwen3", size="0.8B", gpu="h100", time_scale=SCALE)
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == json.loads((Path(tiny.location) / "config.json").read_text())["hidden_size"]
    assert (out / "tokenizer.json").is_file() and resolve(str(out)).identity == str(out.resolve())
    assert meta.base_identity == tiny.identity
    other = sim_train_one(recipe, 1, tmp_path / "s1", model=recipe.base_model, size="0.8B", gpu="h100",
                          time_scale=SCALE)
    assert other.content_hash != hub.content_hash  # each (recipe, seed) its own weights file
    spec = SimSpec(model=str(out), served_name="v1_7", model_size="0.8b", time_scale=0.01)
    with VLLMServer(spec, log_path=tmp_path / "sim.log") as server:
        cards = httpx.get(f"{server.api_base}/models", timeout=10).json()["data"]
        assert [(c["id"], c["root"]) for c in cards] == [("v1_7", str(out))]
        reply = httpx.post(f"{server.api_base}/chat/completions", timeout=30, json={
            "model": "v1_7", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] <= 8


def test_the_sim_engine_and_the_registry_load_a_simulated_adapter(tiny, tmp_path):
    """On a base whose weights are here (tiny-qwen3), the zero tensors fit its shapes, so the
    registry's checks (rank, base identity, shapes) and the engine's load both pass."""
    recipe = Recipe(name="simlora", base_model="local:tiny-qwen3", corpus="unused.jsonl",
                    lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    out = tmp_path / "simlora-s0"
    meta = sim_train_one(recipe, 0, out, model="local:tiny-qwen3", size="0.8b", gpu="h100", time_scale=SCALE)
    assert meta.base_identity == tiny.identity
    spec = SimSpec(model=tiny.location, served_name="sim", model_size="0.8b", time_scale=0.01, max_lora_rank=16,
                   max_loras=2)
    with VLLMServer(spec, base_identity=tiny.identity, log_path=tmp_path / "sim.log") as server:
        direct = httpx.post(f"{server.api_base}/load_lora_adapter",
                            json={"lora_name": "direct", "lora_path": str(out)}, timeout=10)
        assert direct.status_code == 200, direct.text
        registry = AdapterRegistry.connect(server.base_url)
        loaded, report = registry.load("simlora@s0", out)
        assert loaded.served_name.endswith(meta.content_hash[:12])
        assert report is not None and report.differing == report.probes  # the sim answers it as its own model
        served = {m["id"]: m for m in httpx.get(f"{server.api_base}/models", timeout=10).json()["data"]}
        assert served[loaded.served_name]["parent"] == "sim" and "direct" in served
