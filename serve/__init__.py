"""Serving: vLLM server lifecycle and the runtime LoRA adapter registry."""
