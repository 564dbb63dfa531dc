"""Random LoRA adapters: real PEFT artifacts with chosen weights, for pipeline checks.

PEFT initialises ``lora_B`` to zero, so a fresh adapter computes exactly what its base does;
``scale > 0`` draws both matrices from a seeded normal so the adapter visibly changes outputs.
A zero adapter is useful too: it is what a silently ignored adapter looks like.
"""

from __future__ import annotations

from pathlib import Path

# torch, peft and transformers are imported when an adapter is made: seconds at import.


def make_random_adapter(
    base_path: str | Path,
    out: str | Path,
    *,
    rank: int = 8,
    alpha: int = 16,
    seed: int = 0,
    scale: float = 0.5,
    target_modules: str | list[str] = "all-linear",
    modules_to_save: list[str] | None = None,
) -> Path:
    """A LoRA adapter with random weights on a base, for checking the pipeline without training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules,
                        modules_to_save=modules_to_save, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    if scale:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * scale)
    out = Path(out)
    model.save_pretrained(out)
    return out
