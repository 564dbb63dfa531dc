"""LoRA and partial fine-tuning with TRL's SFTTrainer, assistant-only loss.

LoRA writes a PEFT adapter the serving layer loads at runtime. Partial fine-tuning (top-k
layers, lm_head and final norm) writes a full checkpoint, because vLLM cannot serve
``modules_to_save`` adapters; it uses bitsandbytes 8-bit AdamW on GPU and torch AdamW on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.models import resolve
from harness.naming import adapter_folder
from harness.provenance import package_versions
from serve.adapters import inspect_adapter
from serve.hardware import cpu_info
from train.corpus_transforms import apply_transforms, read_corpus
from train.recipe import Recipe
from train.template import CHATML_TRAINING_TEMPLATE, training_template, verify_mask

# torch, transformers, datasets, trl and peft are imported when training starts: seconds at import,
# which a sweep driver or a finished (skipped) training never needs.

log = logging.getLogger(__name__)


def corpus_hash(rows: list[dict]) -> str:
    """A hash of the corpus rows a training saw, recorded in its metadata."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _layers(model):
    """The transformer block list (``model.model.layers`` for Llama/Qwen-style models)."""
    import torch

    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList):
            return module
    raise ValueError("partial fine-tuning: no transformer layer list found in the model")


def freeze_for_partial(model, top_k: int) -> int:
    """Train only the top ``top_k`` layers, the final norm and lm_head; returns trainable params."""
    for p in model.parameters():
        p.requires_grad = False
    layers = _layers(model)
    if top_k > len(layers):
        raise ValueError(f"top_k_layers={top_k} but the model has {len(layers)} layers")
    for layer in layers[-top_k:]:
        for p in layer.parameters():
            p.requires_grad = True
    for p in model.get_output_embeddings().parameters():
        p.requires_grad = True  # with tied embeddings this also trains the input embeddings
    inner = getattr(model, "model", model)
    norm = getattr(inner, "norm", None)
    if norm is not None:
        for p in norm.parameters():
            p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class TrainingSummary:
    """What ``train_one`` trained (``as_dict()`` is its training_meta.json); ``skipped``: the
    sweep found it already trained (same recipe and seed) and read it back instead."""

    recipe: dict
    recipe_name: str
    method: str
    seed: int
    base_model: str | None = None
    base_identity: str | None = None
    corpus: str | None = None
    corpus_rows: int = 0
    corpus_hash: str | None = None
    loss_curve: list[float] = field(default_factory=list)
    train_loss: float | None = None
    steps: int = 0
    steps_per_s: float = 0.0
    device: str = "cpu"
    optimizer: str | None = None
    trainable_params: int | None = None
    precision: str | None = None
    peak_gpu_memory_gib: float | None = None
    content_hash: str = ""
    versions: dict = field(default_factory=dict)
    wall_s: float = 0.0
    # A simulated training (train.sim_training): no model ran; ``simulation`` holds its figures.
    simulated: bool = False
    simulation: dict | None = None
    skipped: bool = False

    def as_dict(self) -> dict:
        """As training_meta.json holds it (``skipped`` is the sweep's, not the training's)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped"}

    @classmethod
    def from_dict(cls, meta: dict, *, skipped: bool = False) -> TrainingSummary:
        """A training_meta.json read back; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)} - {"skipped"}
        return cls(**{k: v for k, v in meta.items() if k in known}, skipped=skipped)


def train_one(recipe: Recipe, seed: int, out: Path, *, model: str | None = None,
              corpus: str | None = None) -> TrainingSummary:
    """Train one recipe with one seed (LoRA or partial fine-tune) and write the adapter; returns its metadata."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    base = resolve(model or recipe.base_model)
    corpus_path = Path(corpus or recipe.corpus)
    steps = [dict(s, seed=s.get("seed", seed)) if s["kind"] == "generic-control" else s for s in recipe.transforms]
    rows = apply_transforms(read_corpus(corpus_path), steps)
    if not rows:
        raise ValueError(f"recipe {recipe.name}: the corpus {corpus_path} is empty after its transforms")

    tokenizer = AutoTokenizer.from_pretrained(base.location)
    serving_template = tokenizer.chat_template
    template = CHATML_TRAINING_TEMPLATE if recipe.chat_template == "chatml" else training_template(tokenizer)
    verify_mask(tokenizer, template)
    tokenizer.chat_template = template

    cuda = torch.cuda.is_available()
    # bf16 mixed precision where the hardware computes bf16 natively (serve.hardware): on a CPU
    # with avx512_bf16 the demo LoRA trained 1.4x faster than in float32, with the same losses.
    mixed_bf16 = cuda or cpu_info().native_bf16
    dtype = torch.bfloat16 if cuda else torch.float32
    net = AutoModelForCausalLM.from_pretrained(base.location, dtype=dtype)
    t = recipe.training
    optim, peft_config, trainable = "adamw_torch", None, None
    if recipe.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                                 target_modules=recipe.lora.target_modules, task_type="CAUSAL_LM")
    else:
        trainable = freeze_for_partial(net, recipe.partial.top_k_layers)
        if cuda:
            optim = "adamw_bnb_8bit"
        else:
            log.warning("partial fine-tuning on CPU: bitsandbytes 8-bit AdamW needs a GPU; using torch AdamW")
    with tempfile.TemporaryDirectory(prefix="skillsweep-train-") as work:
        args = SFTConfig(
            output_dir=work, assistant_only_loss=True, max_length=t.max_length, num_train_epochs=t.epochs,
            max_steps=t.max_steps, per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
            learning_rate=t.learning_rate, warmup_steps=t.warmup_ratio, seed=seed, data_seed=seed, logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=not cuda, bf16=mixed_bf16, optim=optim,
            dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = SFTTrainer(model=net, args=args, processing_class=tokenizer, peft_config=peft_config,
                             train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = trainer.train()
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.chat_template = serving_template  # serve with the model's own template
    if recipe.method == "lora":
        trainer.model.save_pretrained(out)

        content = inspect_adapter(out).content_hash
    else:
        trainer.model.to(torch.bfloat16).save_pretrained(out)
        tokenizer.save_pretrained(out)
        digest = hashlib.sha256()
        for f in sorted(out.glob("*.safetensors")):
            digest.update(f.read_bytes())
        content = digest.hexdigest()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    meta = TrainingSummary(
        recipe=recipe.model_dump(), recipe_name=recipe.name, method=recipe.method, seed=seed,
        base_model=base.ref, base_identity=base.identity, corpus=str(corpus_path),
        corpus_rows=len(rows), corpus_hash=corpus_hash(rows), loss_curve=losses,
        train_loss=result.training_loss, steps=trainer.state.global_step,
        steps_per_s=round(trainer.state.global_step / max(time.time() - started, 1e-9), 4),
        device="cuda" if cuda else "cpu", optimizer=optim, trainable_params=trainable,
        precision="bf16-mixed" if mixed_bf16 else "fp32",
        peak_gpu_memory_gib=peak, content_hash=content, versions=package_versions(),
        wall_s=round(time.time() - started, 2),
    )
    (out / "training_meta.json").write_text(json.dumps(meta.as_dict(), indent=2, default=str))
    return meta


def train_recipe(recipe: Recipe, out_root: Path, *, seeds: list[int] | None = None, model: str | None = None,
                 corpus: str | None = None) -> list[TrainingSummary]:
    """Train every seed of a recipe into ``out_root/<name>-s<seed>``."""
    return [train_one(recipe, s, out_root / adapter_folder(recipe.name, s), model=model, corpus=corpus)
            for s in (seeds or recipe.seeds)]
