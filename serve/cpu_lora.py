"""A vLLM plugin (entry point ``vllm.general_plugins``) that makes runtime LoRA usable on CPU.

vLLM's CPU punica path (``vllm.lora.ops.torch_ops``, v0.32) gathers a full LoRA weight matrix
*per token* (``weights[indices]``: tokens × out × in) and contracts it with ``einsum``. For a
prefill chunk of a few thousand tokens that is hundreds of MB per layer and module, so an
adapter served 2.4x slower than its base on the demo (64 bench cells: 133 s against 54 s).
A batch holds few distinct adapters, so one matmul per distinct index computes the same
numbers without the gather. vLLM loads general plugins in every process it starts (API
server, engine core, workers); ``register`` is idempotent and does nothing off CPU.
``SKILLSWEEP_CPU_LORA=0`` keeps vLLM's own functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

ENV = "SKILLSWEEP_CPU_LORA"
_PATCHED = "_skillsweep_grouped"
# Under vLLM's logger tree, so the line lands in the server log beside vLLM's own.
log = logging.getLogger("vllm.skillsweep.cpu_lora")


def grouped_lora_matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor | None:
    """``out[t] = weights[indices[t]] @ inputs[t]``, one matmul per distinct index.

    ``weights`` is (slots, out, in) or (slots, 1, out, in); a negative index wraps as in vLLM's
    gather. ``None`` where the shapes are not the plain one-index-per-row case, so the caller
    falls back to vLLM's own function."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    if weights.dim() != 3 or indices.dim() != 1 or inputs.dim() != 2 or inputs.shape[0] != indices.shape[0]:
        return None
    x = inputs.to(dtype)
    distinct = torch.unique(indices).tolist()
    if len(distinct) == 1:
        return x @ weights[distinct[0]].to(dtype).T
    out = torch.empty(x.shape[0], weights.shape[1], dtype=dtype)
    for index in distinct:
        rows = (indices == index).nonzero().squeeze(1)
        out[rows] = x[rows] @ weights[index].to(dtype).T
    return out


def _wrap(name: str, original):
    fast: Callable[..., Any]  # each op has its own signature
    if name == "bgmv_shrink":
        def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
            out = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
            if out is None:
                return original(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling)
            output_tensor[:, : out.shape[1]] = scaling * out
        fast = bgmv_shrink
    elif name == "bgmv_expand":
        def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
            out = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
            if out is None or out.shape[0] != output_tensor.shape[0]:
                return original(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
            common = min(out.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
            if add_inputs:
                output_tensor[:, :common] += out[:, :common]
            else:
                output_tensor[:, :common] = out[:, :common]
        fast = bgmv_expand
    else:
        def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                              add_inputs=True):
            out = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
            if out is None:
                return original(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                                add_inputs)
            if add_inputs:
                output_tensor[:, slice_offset: slice_offset + slice_size] += out
            else:
                output_tensor[:, slice_offset: slice_offset + slice_size] = out
        fast = bgmv_expand_slice
    setattr(fast, _PATCHED, original)
    return fast


def register() -> None:
    """Swap the grouped versions into vLLM's torch ops and its CPU punica wrapper."""
    if os.environ.get(ENV, "1") == "0":
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    swapped = []
    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
        current = getattr(lora_ops, name)
        if hasattr(current, _PATCHED):
            continue
        fast = _wrap(name, current)
        # The sgmv_* functions call these through lora_ops' globals; punica_cpu imported them by name.
        setattr(lora_ops, name, fast)
        setattr(punica_cpu, name, fast)
        swapped.append(name)
    if swapped:
        log.info("skillsweep: grouped CPU LoRA ops in place of vLLM's (%s; %s=0 turns this off)",
                 ", ".join(swapped), ENV)
