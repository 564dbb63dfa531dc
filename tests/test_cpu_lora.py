"""The CPU LoRA plugin computes what vLLM's own torch ops compute, for mixed adapters in one
batch, rows without an adapter (index -1 wraps, as in vLLM), and the sliced expand."""

from __future__ import annotations

import importlib

import pytest
import torch

from serve import cpu_lora

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")


@pytest.fixture
def originals():
    """vLLM's functions, unpatched (a server in this process may have loaded the plugin)."""
    return {n: getattr(getattr(lora_ops, n), cpu_lora._PATCHED, getattr(lora_ops, n))
            for n in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")}


def _case(tokens: int, slots: int, seed: int, mixed: bool):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, 64, generator=g, dtype=torch.bfloat16)
    a = torch.randn(slots, 1, 8, 64, generator=g, dtype=torch.bfloat16)
    b = torch.randn(slots, 1, 96, 8, generator=g, dtype=torch.bfloat16)
    idx = torch.randint(-1, slots, (tokens,), generator=g) if mixed else torch.full((tokens,), slots - 1)
    return x, a, b, idx


@pytest.mark.parametrize("mixed", [True, False])
@pytest.mark.parametrize("tokens", [1, 7, 300])
def test_grouped_ops_match_vllm(originals, mixed, tokens):
    x, a, b, idx = _case(tokens, slots=3, seed=tokens, mixed=mixed)
    ref_s, fast_s = torch.zeros(tokens, 8), torch.zeros(tokens, 8)
    originals["bgmv_shrink"](x, a, ref_s, idx, 0.5)
    cpu_lora._wrap("bgmv_shrink", originals["bgmv_shrink"])(x, a, fast_s, idx, 0.5)
    torch.testing.assert_close(fast_s, ref_s, rtol=1e-5, atol=1e-5)

    for add in (True, False):
        base = torch.randn(tokens, 96)
        ref_e, fast_e = base.clone(), base.clone()
        originals["bgmv_expand"](ref_s, b, ref_e, idx, add)
        cpu_lora._wrap("bgmv_expand", originals["bgmv_expand"])(ref_s, b, fast_e, idx, add)
        torch.testing.assert_close(fast_e, ref_e, rtol=1e-5, atol=1e-5)

        wide = torch.randn(tokens, 300)
        ref_w, fast_w = wide.clone(), wide.clone()
        originals["bgmv_expand_slice"](ref_s, b, ref_w, idx, 100, 96, add)
        cpu_lora._wrap("bgmv_expand_slice", originals["bgmv_expand_slice"])(ref_s, b, fast_w, idx, 100, 96, add)
        torch.testing.assert_close(fast_w, ref_w, rtol=1e-5, atol=1e-5)
        assert torch.equal(fast_w[:, :100], wide[:, :100])  # outside the slice untouched


def test_register_patches_once_and_can_be_turned_off(monkeypatch):
    punica_cpu = importlib.import_module("vllm.lora.punica_wrapper.punica_cpu")
    saved = {n: (getattr(lora_ops, n), getattr(punica_cpu, n)) for n in ("bgmv_shrink", "bgmv_expand",
                                                                        "bgmv_expand_slice")}
    try:
        monkeypatch.setenv(cpu_lora.ENV, "0")
        cpu_lora.register()
        assert all(getattr(lora_ops, n) is saved[n][0] for n in saved)
        monkeypatch.delenv(cpu_lora.ENV)
        cpu_lora.register()
        first = {n: getattr(lora_ops, n) for n in saved}
        cpu_lora.register()  # vLLM may load plugins more than once per process
        for n in saved:
            assert getattr(lora_ops, n) is first[n] is getattr(punica_cpu, n)
            assert getattr(first[n], cpu_lora._PATCHED) is getattr(saved[n][0], cpu_lora._PATCHED, saved[n][0])
    finally:
        for n, (ops_fn, punica_fn) in saved.items():
            setattr(lora_ops, n, ops_fn)
            setattr(punica_cpu, n, punica_fn)
