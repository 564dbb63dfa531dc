"""Generation throughput: the vLLM path vs the HF ``generate`` path, measured in one run.

Same model, bench cells, conditions and greedy settings on both paths. Times cover
generation only (server start-up and model loading are reported beside them), and the
agreement line says how many cells produced identical text on both paths.

    python -m jobs.benchmark_generation [--model local:smollm2-135m-instruct] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import polars as pl

from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from serve.hardware import cpu_info

OUT = Path("results/benchmarks/generation.json")


def machine_facts() -> dict:
    """What every CPU figure depends on: the CPU model and its vector / bf16 flags."""
    return {"cpus": os.cpu_count(), "cpu": cpu_info().describe(), "platform": platform.platform(),
            "python": platform.python_version()}


def write_benchmark(out: Path, result: dict) -> dict:
    """A benchmark's JSON under results/benchmarks/, with the machine and the time it ran."""
    result = {**result, "machine": machine_facts(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _path_figures(summary, wall_total: float, dtype: str | None) -> dict:
    stats = summary.stats
    wall = stats.wall_s
    return {
        "dtype": dtype,
        "episodes": stats.done,
        "output_tokens": stats.completion_tokens,
        "generation_wall_s": round(wall, 2),
        "total_wall_s": round(wall_total, 2),
        "episodes_per_s": round(stats.done / wall, 4),
        "output_tokens_per_s": round(stats.completion_tokens / wall, 2),
    }


def main() -> None:
    """Measure generation throughput on the vLLM and HF paths over the same cells; write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:smollm2-135m-instruct")
    parser.add_argument("--bench", default="builtin")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    sampling = Sampling(max_tokens=args.max_tokens, repetition_penalty=1.05)
    figures, frames = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        for backend in ("vllm", "hf"):
            request = GenerateRequest(run=f"{tmp}/{backend}", model=args.model, bench=args.bench,
                                      split=args.split, backend=backend, sampling=sampling,
                                      concurrency=args.concurrency, progress_every_s=0)
            started = time.perf_counter()
            summary = run_generation(request)
            frames[backend] = pl.read_parquet(f"{tmp}/{backend}/episodes.parquet")
            figures[backend] = _path_figures(summary, time.perf_counter() - started, frames[backend]["dtype"][0])
            print(f"{backend}: {figures[backend]}", flush=True)
    joined = frames["vllm"].join(frames["hf"], on=["task_uid", "condition"], suffix="_hf")
    identical = int((joined["response"] == joined["response_hf"]).sum())
    result = {
        "vllm": figures["vllm"],
        "hf": figures["hf"],
        "ratio": round(figures["vllm"]["output_tokens_per_s"] / figures["hf"]["output_tokens_per_s"], 2),
        "ratio_definition": "vLLM output tokens/s over HF output tokens/s, generation time only",
        "cells": len(frames["vllm"]),
        "identical_responses": identical,
        "model": args.model,
        "bench": args.bench,
        "split": args.split,
        "sampling": sampling.as_dict(),
        "concurrency": args.concurrency,
    }
    result = write_benchmark(args.out, result)
    print(f"ratio (vLLM {figures['vllm']['dtype']} / HF {figures['hf']['dtype']} output tokens per second): "
          f"{result['ratio']}x over {result['cells']} cells on {result['machine']['cpu']['model']}; "
          f"identical responses {identical}/{len(joined)}; wrote {args.out}")


if __name__ == "__main__":
    main()
