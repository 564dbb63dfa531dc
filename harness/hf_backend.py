"""The HF transformers generation path (the study's original): one prompt at a time."""

from __future__ import annotations

import time

from harness.client import Completion, Sampling

# torch, transformers and peft are imported when a model loads: seconds, which vLLM runs never need.


class HFGenerator:
    def __init__(self, model_path: str, adapter_path: str | None = None, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cuda = torch.cuda.is_available()
        if dtype == "auto":
            # bf16 on GPU as the study ran; fp32 on CPU, where it is the faster kernel path.
            dtype = "bfloat16" if cuda else "float32"
        self.device = "cuda" if cuda else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        if adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path)
        self.model = model.to(self.device).eval()

    def generate(self, messages: list[dict], sampling: Sampling) -> Completion:
        import torch

        started = time.perf_counter()
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True).to(self.device)
        kwargs = dict(max_new_tokens=sampling.max_tokens, do_sample=sampling.temperature > 0,
                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        if sampling.temperature > 0:
            kwargs["temperature"] = sampling.temperature
        if sampling.repetition_penalty:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        new = out[0, prompt_len:]
        eos = self.tokenizer.eos_token_id
        stopped = eos is not None and len(new) > 0 and int(new[-1]) == eos
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True),
            finish_reason="stop" if stopped or len(new) < sampling.max_tokens else "length",
            prompt_tokens=prompt_len,
            completion_tokens=int(len(new)),
            latency_s=time.perf_counter() - started,
        )
