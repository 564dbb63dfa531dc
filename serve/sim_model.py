"""The throughput model behind the simulated engine (:mod:`serve.sim_engine`) and the makespan
estimate (:mod:`jobs.estimate`): one set of pure functions, so both say the same thing.

An engine step (vLLM V1 continuous batching with chunked prefill) costs

    step_s = overhead_s + weights_s + per_seq_s * decoding + prefill_tokens / prefill_tok_s

times ``1 + lora_overhead`` when any sequence in the batch uses an adapter, plus
``lora_swap_s`` for each adapter copied into a GPU slot. Decoding is bandwidth-bound (every step
reads the weights once and each sequence's KV cache); prefill is compute-bound. The figures are
*derived* from a GPU class (bandwidth, dense bf16 FLOP/s) and a model size (parameters) by the
arithmetic in :func:`engine_params`; the README ("Simulated engine and estimates") shows the
resulting table and says where each assumption comes from. They are estimates, not measurements.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

KIB = 1024
GB = 1e9


@dataclass(frozen=True)
class GpuClass:
    name: str
    memory_gib: float
    bandwidth_bytes_s: float  # HBM, datasheet
    bf16_flops: float  # dense, datasheet
    # Fractions of the datasheet figures a serving engine reaches (our estimates, see README).
    bandwidth_efficiency: float = 0.70
    # Per-step CPU-side cost: scheduling, sampling, kernel launches with CUDA graphs.
    step_overhead_s: float = 0.0015
    # vLLM's own defaults for its OpenAI server on this GPU (EngineArgs.get_batch_defaults: 1024
    # sequences and 8192 tokens a step from 70 GiB up, A100s excepted; 256 and 2048 below).
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192


GPUS = {
    # NVIDIA H100 SXM5 80 GB datasheet: 3.35 TB/s HBM3, 989 TFLOP/s dense BF16.
    "h100": GpuClass("h100", 80, 3.35e12, 989e12),
    # NVIDIA H200 SXM 141 GB datasheet: 4.8 TB/s HBM3e, same compute as the H100.
    "h200": GpuClass("h200", 141, 4.8e12, 989e12),
    # NVIDIA A100 SXM4 80 GB datasheet: 2.04 TB/s HBM2e, 312 TFLOP/s dense BF16.
    "a100": GpuClass("a100", 80, 2.04e12, 312e12, step_overhead_s=0.002, max_num_seqs=256,
                     max_num_batched_tokens=2048),
}


@dataclass(frozen=True)
class EngineParams:
    """What one engine replica of a model on one GPU costs; every time in seconds."""

    gpu: str
    params: float  # model parameters
    startup_s: float
    weights_s: float  # one read of the bf16 weights per decode step
    per_seq_s: float  # per decoding sequence per step: its KV-cache read and its FLOPs
    prefill_tok_s: float
    overhead_s: float
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    adapter_load_s: float = 0.5  # read a LoRA from disk into host memory
    lora_swap_s: float = 0.002  # copy one LoRA from host memory into a GPU slot
    lora_overhead: float = 0.15  # extra step time with LoRA kernels in the batch
    # Mean length of a reply when max_tokens does not cut it (see output_tokens).
    mean_output_tokens: int = 800

    def step_s(self, decoding: float, prefill_tokens: float = 0.0, lora: bool = False, swaps: int = 0) -> float:
        return step_time(self, decoding, prefill_tokens, lora, swaps)


def parse_size(size: str) -> float:
    """``'4b'``, ``'0.8B'``, ``'135M'`` → parameters; a clear error otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bBmM])\s*", str(size))
    if not match:
        raise ValueError(f"model size {size!r} is not a parameter count such as '0.8B', '4b' or '135M'")
    return float(match[1]) * (1e9 if match[2] in "bB" else 1e6)


def engine_params(gpu: str, size: str | float, **overrides) -> EngineParams:
    """The engine figures for a model of ``size`` parameters on one ``gpu``, by this arithmetic:

    * weights_s = 2 bytes x N / (bandwidth x 0.70)
    * per_seq_s = KV bytes read per step / (bandwidth x 0.70) + 2 N / (FLOP/s x MFU), with an
      average context of 1,500 tokens and KV bytes per token = 24 KiB + 10 KiB per 1e9 params
      (32 KiB at 0.8B, 64 KiB at 4B: a GQA cache on the quarter of Qwen3.5's layers that keep one)
    * prefill_tok_s = FLOP/s x MFU / 2 N, MFU = 0.25 + 0.05 per 1e9 params, at most 0.40
      (small models run smaller, less efficient matmuls)
    * startup_s = 40 s + 7.5 s per 1e9 params (weights load, torch.compile, CUDA-graph capture)
    """
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU class {gpu!r}; known: {', '.join(GPUS)}")
    g = GPUS[gpu]
    n = size if isinstance(size, float | int) else parse_size(size)
    bandwidth = g.bandwidth_bytes_s * g.bandwidth_efficiency
    billions = n / GB
    mfu = min(0.40, 0.25 + 0.05 * billions)
    kv_per_token = (24 + 10 * billions) * KIB
    values: dict[str, Any] = dict(
        gpu=gpu, params=n,
        startup_s=round(40 + 7.5 * billions, 1),
        weights_s=2 * n / bandwidth,
        per_seq_s=kv_per_token * 1500 / bandwidth + 2 * n / (g.bf16_flops * mfu),
        prefill_tok_s=g.bf16_flops * mfu / (2 * n),
        overhead_s=g.step_overhead_s,
        max_num_seqs=g.max_num_seqs,
        max_num_batched_tokens=g.max_num_batched_tokens,
    )
    return EngineParams(**(values | overrides))


def step_time(p: EngineParams, decoding: float, prefill_tokens: float = 0.0, lora: bool = False,
              swaps: int = 0) -> float:
    """Seconds for one engine step with ``decoding`` sequences and ``prefill_tokens`` of prompt."""
    compute = p.overhead_s + p.weights_s + p.per_seq_s * decoding + prefill_tokens / p.prefill_tok_s
    return compute * (1 + p.lora_overhead if lora else 1) + swaps * p.lora_swap_s


def decode_rate(p: EngineParams, batch: float, prompt_per_output: float = 0.0, lora: bool = False) -> float:
    """Steady-state output tokens per second of one replica holding ``batch`` sequences, each
    bringing ``prompt_per_output`` prompt tokens per token it generates (prefill interleaved)."""
    if batch <= 0:
        return 0.0
    return batch / step_time(p, batch, batch * prompt_per_output, lora)


# ------------------------------------------------------------------ tokens

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # chat-template markers around each message


def text_tokens(text: str) -> int:
    """Tokens in a text, estimated from its length in characters."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(messages: list[dict]) -> int:
    """Prompt length by rule, not by tokenizer: 4 characters a token (English text under BPE
    tokenizers of this generation) plus 4 tokens per message for the template."""
    total = 0
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        total += text_tokens(str(content)) + TOKENS_PER_MESSAGE
    return total


def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2 ** 64


LENGTH_RANGE = (0.25, 1.75)  # a reply's natural length, as fractions of the mean (uniform)


def natural_length(key: str, mean: float) -> int:
    """How long the reply would be without a cap: uniform on [mean/4, 7 mean/4], drawn from
    ``key`` (model and prompt), so the same request always gets the same length."""
    lo, hi = LENGTH_RANGE
    return max(1, round(mean * (lo + (hi - lo) * _unit(key))))


def output_tokens(key: str, max_tokens: int, mean: float) -> int:
    """The tokens a simulated reply has: its natural length, capped at ``max_tokens``."""
    return min(max_tokens, natural_length(key, mean))


def longest_output_tokens(max_tokens: int, mean: float) -> float:
    """The longest reply :func:`output_tokens` gives: the top of its range, or the cap."""
    return min(float(max_tokens), LENGTH_RANGE[1] * mean)


def expected_output_tokens(max_tokens: int, mean: float) -> float:
    """E[min(max_tokens, U)] for U uniform on [mean/4, 7 mean/4] (the rule of output_tokens)."""
    lo, hi = LENGTH_RANGE[0] * mean, LENGTH_RANGE[1] * mean
    if max_tokens >= hi:
        return mean
    if max_tokens <= lo:
        return float(max_tokens)
    below = (max_tokens - lo) / (hi - lo)  # P(U < max_tokens)
    return below * (lo + max_tokens) / 2 + (1 - below) * max_tokens


# ------------------------------------------------------------------ training

@dataclass(frozen=True)
class TrainingModel:
    """How long one training takes on one GPU: a fixed start (model load, tokenisation) plus
    tokens x epochs at a throughput of FLOP/s x MFU / 6 N (forward 2N, backward 4N per token;
    LoRA skips weight gradients but gradient checkpointing recomputes the forward)."""

    corpus_rows: int = 353  # the study's corpus
    tokens_per_row: int = 1500  # skill-block prompt + a chain-of-thought demonstration (estimate)
    mfu: float = 0.30
    startup_s: float = 60.0

    def tokens_s(self, gpu: str, params: float) -> float:
        return GPUS[gpu].bf16_flops * self.mfu / (6 * params)

    def duration_s(self, gpu: str, params: float, epochs: float) -> float:
        return self.startup_s + self.corpus_rows * self.tokens_per_row * epochs / self.tokens_s(gpu, params)
