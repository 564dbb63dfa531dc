"""A simulated training: the duration the throughput model gives, then a tiny adapter (or checkpoint).

:func:`sim_train_one` stands in for :func:`train.trainer.train_one` when a sweep runs on the
simulated engine (:mod:`serve.sim_engine`): it sleeps what one training of the recipe would
take on one GPU (:class:`serve.sim_model.TrainingModel`, the same figure the makespan estimate
uses) times ``time_scale``, then writes

* ``adapter_config.json``: a PEFT LoRA config with the recipe's rank, alpha, dropout and
  target modules, ``base_model_name_or_path`` = the base's reference;
* ``adapter_model.safetensors``: one zero ``lora_A`` / ``lora_B`` pair on layer 0 named as PEFT
  names them, shaped to fit the base when its weights are on this machine (so the adapter
  checks of :mod:`serve.adapters` pass) and 64 features wide otherwise (nothing to check
  against), with the recipe and seed in the file's metadata so every (recipe, seed) has its
  own content hash;
* ``training_meta.json``: the same fields as a real training's, ``simulated: true`` and the
  figures behind the duration under ``simulation``, ``device: sim-<gpu>``, no loss curve.

A partial fine-tune (``method: partial``) writes what a real one does, a checkpoint folder to
serve alone: ``config.json`` (and tokenizer files) copied from the base when it is on this
machine, else a minimal ``config.json`` naming the base; one tiny ``model.safetensors`` (its
content hash, as in ``train_one``, is the hash of the safetensors files); no
``adapter_config.json``. Its reference resolves as a checkpoint path (``check_reference`` wants
``config.json``); the simulated engine serves it with ``--model`` = the folder.

Idempotent as the sweep's ``train_task``: a folder whose metadata has the same recipe and seed
is read back (``skipped``) without sleeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from dataclasses import replace
from pathlib import Path

from harness.errors import SkillsweepError
from harness.models import model_identity, resolve
from harness.provenance import package_versions
from serve.adapters import inspect_adapter
from serve.sim_model import TrainingModel, parse_size
from train.recipe import Recipe
from train.trainer import TrainingSummary

# Width of the zero tensors when the base's weights are not on this machine (a hub id).
NOMINAL_FEATURES = 64
# Modules PEFT's "all-linear" targets in a Llama/Qwen-style block; the first present is used.
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SimTrainingError(SkillsweepError, ValueError):
    """Simulated training asked for something it cannot do (a time scale that is not > 0)."""


def _safetensors_shapes(file: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header (8-byte length, then JSON), without loading any."""
    with file.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _local_base_dir(model: str) -> Path | None:
    """The base's folder when its weights are on this machine; a hub id is looked up in the
    local cache only (a simulation downloads nothing)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.startswith("local:"):
        return Path(resolve(model).location)  # the store model the server resolves too
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached (or not a hub id): no shapes to fit
        return None


def _layer0_module(model: str, targets: str | list[str]) -> tuple[str, int, int]:
    """(module name, in features, out features) of one targeted module on layer 0."""
    wanted = LINEAR_MODULES if isinstance(targets, str) else tuple(targets)
    base = _local_base_dir(model)
    shapes: dict[str, list[int]] = {}
    for file in sorted(base.glob("*.safetensors")) if base else ():
        shapes.update(_safetensors_shapes(file))
    for name in wanted:
        for key, shape in shapes.items():
            if key.endswith(f".{name}.weight") and ".layers.0." in key and len(shape) == 2:
                return key.removesuffix(".weight"), shape[1], shape[0]
    name = wanted[0] if wanted else "q_proj"
    block = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"model.layers.0.{block}.{name}", NOMINAL_FEATURES, NOMINAL_FEATURES


def adapter_config(recipe: Recipe, model: str) -> dict:
    """A PEFT ``LoraConfig`` as ``save_pretrained`` writes it, from the recipe."""
    lora = recipe.lora
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model, "revision": None,
        "r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "target_modules": lora.target_modules,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
        "layers_pattern": None, "use_rslora": False, "use_dora": False,
    }


def write_sim_adapter(recipe: Recipe, seed: int, out: Path, model: str) -> Path:
    """The adapter folder a simulated training leaves: config, tiny zero weights; returns ``out``."""
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    module, fan_in, fan_out = _layer0_module(model, recipe.lora.target_modules)
    r = recipe.lora.r
    prefix = f"base_model.model.{module}"
    tensors = {f"{prefix}.lora_A.weight": np.zeros((r, fan_in), np.float32),
               f"{prefix}.lora_B.weight": np.zeros((fan_out, r), np.float32)}
    metadata = {"format": "pt", "skillsweep": "simulated training",
                "recipe": json.dumps(recipe.model_dump(), sort_keys=True, default=str), "seed": str(seed)}
    tmp = out / "adapter_model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps(adapter_config(recipe, model), indent=2))
    return out


# Files of a base checkpoint a partial fine-tune saves beside its weights (not the store's marker,
# which would give the checkpoint the base's identity).
CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


def write_sim_checkpoint(recipe: Recipe, seed: int, out: Path, model: str) -> str:
    """The checkpoint folder a simulated partial fine-tune leaves; returns its content hash
    (sha256 of its safetensors files, as :func:`train.trainer.train_one` computes it)."""
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    base = _local_base_dir(model)
    copied = [f for f in CHECKPOINT_FILES if base and (base / f).is_file()]
    for name in copied:
        assert base is not None, "copied only from a local base"
        shutil.copyfile(base / name, out / name)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config["_name_or_path"] = model
    config["skillsweep_simulated"] = {"recipe": recipe.name, "seed": seed, "base_model": model}
    config_file.write_text(json.dumps(config, indent=2))
    metadata = {"format": "pt", "skillsweep": "simulated partial fine-tune",
                "recipe": json.dumps(recipe.model_dump(), sort_keys=True, default=str), "seed": str(seed)}
    tmp = out / "model.safetensors.tmp"
    save_file({"lm_head.weight": np.zeros((1, NOMINAL_FEATURES), np.float32)}, str(tmp), metadata=metadata)
    os.replace(tmp, out / "model.safetensors")
    digest = hashlib.sha256()
    for f in sorted(out.glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()


def sim_train_one(recipe: Recipe, seed: int, out: Path, *, model: str, size: str, gpu: str, time_scale: float,
                  training: TrainingModel = TrainingModel(), corpus_rows: int | None = None,
                  began: float | None = None) -> TrainingSummary:
    """Simulate one training of ``recipe`` with ``seed`` (LoRA: an adapter; partial: a checkpoint)
    on one ``gpu`` (a GPU class of :data:`serve.sim_model.GPUS`) for a base of ``size``
    parameters: write the result into ``out``, wait out its modelled duration × ``time_scale``,
    then write ``training_meta.json``; returns the metadata (``steps_per_s`` per simulated
    second). ``corpus_rows`` replaces the training model's corpus size (the rows the recipe
    would see).

    The duration counts from ``began`` when the caller knows when the training began (a sweep:
    when it asked Ray for a training Ray could start at once), else from this call: the model's
    fixed start-up (``startup_s``) covers starting the process and loading the model, so
    counting from this call would count the process's start twice. The writing happens inside
    the duration, as a real training's saving does."""
    out = Path(out)
    meta_file = out / "training_meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
        if meta.get("recipe") == recipe.model_dump() and meta.get("seed") == seed:
            return TrainingSummary.from_dict(meta, skipped=True)
    if time_scale <= 0:
        raise SimTrainingError(f"time_scale must be > 0, got {time_scale}")
    started = min(time.time(), began or time.time())
    if corpus_rows is not None:
        training = replace(training, corpus_rows=corpus_rows)
    params = parse_size(size)
    duration = training.duration_s(gpu, params, recipe.training.epochs)
    if recipe.method == "lora":
        write_sim_adapter(recipe, seed, out, model)
        content = inspect_adapter(out).content_hash
    else:
        content = write_sim_checkpoint(recipe, seed, out, model)
    versions = package_versions()
    time.sleep(max(0.0, started + duration * time_scale - time.time()))
    tokens = training.corpus_rows * training.tokens_per_row * recipe.training.epochs
    t = recipe.training
    steps = max(1, round(training.corpus_rows * t.epochs / (t.batch_size * t.grad_accum)))
    if t.max_steps > 0:
        steps = min(steps, t.max_steps)
    meta = TrainingSummary(
        recipe=recipe.model_dump(), recipe_name=recipe.name, method=recipe.method, seed=seed,
        base_model=model, base_identity=model_identity(model), corpus=recipe.corpus,
        corpus_rows=training.corpus_rows, corpus_hash=None, loss_curve=[], train_loss=None, steps=steps,
        steps_per_s=round(steps / duration, 4), device=f"sim-{gpu}",
        optimizer="adamw_torch" if recipe.method == "lora" else "adamw_bnb_8bit",
        trainable_params=None, precision="bf16-mixed", peak_gpu_memory_gib=None,
        content_hash=content, versions=versions,
        wall_s=round(time.time() - started, 2), simulated=True,
        simulation={"gpu": gpu, "params": params, "time_scale": time_scale, "duration_s": round(duration, 2),
                    "tokens": tokens, "tokens_s": round(training.tokens_s(gpu, params), 1),
                    "startup_s": training.startup_s, "tokens_per_row": training.tokens_per_row,
                    "mfu": training.mfu},
    )
    tmp = meta_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta.as_dict(), indent=2, default=str))
    os.replace(tmp, meta_file)
    return meta
