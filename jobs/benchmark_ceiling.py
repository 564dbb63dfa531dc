"""How close the harness comes to the engine's own ceiling, measured in one run.

The same cells (a bench split, both conditions, greedy, the same max tokens and repetition
penalty) on one vLLM server through

  (a) ``skillsweep generate`` (harness.generation_job.run_generation against the server),
  (b) a bare async OpenAI client, at the best of several concurrencies,
  (c) vLLM's offline ``LLM.chat`` on the same prompts (the server stopped first, so the two
      engines never share the cores).

Each path is measured on a warm prefix cache (one unmeasured pass first), since every path
sends the same prompts again. Output tokens per second of each, and
``harness / max(bare client, offline)``, go to results/benchmarks/ceiling.json.

    python -m jobs.benchmark_ceiling [--model local:smollm2-135m-instruct] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.bench import load_bench
from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.models import resolve
from harness.prompts import render
from jobs.benchmark_generation import write_benchmark
from serve.server import server_env
from serve.serving import Serving, server_spec

# openai is imported by the offline path that needs it: about a second at import.

OUT = Path("results/benchmarks/ceiling.json")
SERVED = "bench"


def _prompts(bench_spec: str, split: str) -> list[list[dict]]:
    bench = load_bench(bench_spec)
    return [list(render(bench, t, c).messages) for t in bench.split(split) for c in ("baseline", "curated")]


async def _bare(api_base: str, prompts: list[list[dict]], sampling: Sampling, concurrency: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=api_base, api_key="EMPTY", timeout=None, max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(messages):
        async with gate:
            r = await client.chat.completions.create(
                model=SERVED, messages=messages, temperature=sampling.temperature, max_tokens=sampling.max_tokens,
                seed=sampling.seed, extra_body={"repetition_penalty": sampling.repetition_penalty})
            return r.usage.completion_tokens

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(m) for m in prompts)))
    wall = time.perf_counter() - started
    await client.close()
    return {"concurrency": concurrency, "output_tokens": tokens, "wall_s": round(wall, 2),
            "output_tokens_per_s": round(tokens / wall, 2)}


def _harness(api_base: str, run: Path, args, sampling: Sampling) -> dict:
    summary = run_generation(GenerateRequest(run=str(run), model=SERVED, url=api_base, bench=args.bench,
                                             split=args.split, sampling=sampling, concurrency=args.concurrency,
                                             progress_every_s=0))
    stats = summary.stats
    return {"concurrency": args.concurrency, "output_tokens": stats.completion_tokens,
            "wall_s": round(stats.wall_s, 2),
            "output_tokens_per_s": round(stats.completion_tokens / stats.wall_s, 2),
            "requeued": stats.requeued, "failed": stats.failed}


_OFFLINE = """
import json, sys, time
from vllm import LLM, SamplingParams


def main():  # under a main guard: vLLM's engine core is started with multiprocessing spawn
    cfg = json.load(open(sys.argv[1]))
    llm = LLM(model=cfg["model"], dtype=cfg["dtype"], max_model_len=cfg["max_model_len"], seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=cfg["max_tokens"],
                            repetition_penalty=cfg["repetition_penalty"], seed=0)
    out = []
    for _ in range(2):  # the first pass warms the prefix cache, as on the server
        started = time.perf_counter()
        results = llm.chat(cfg["prompts"], params, use_tqdm=False)
        wall = time.perf_counter() - started
        tokens = sum(len(r.outputs[0].token_ids) for r in results)
        out.append({"output_tokens": tokens, "wall_s": round(wall, 2),
                    "output_tokens_per_s": round(tokens / wall, 2)})
    json.dump(out, open(cfg["result"], "w"))


if __name__ == "__main__":
    main()
"""


def _offline(model_path: str, dtype: str, prompts, sampling: Sampling, max_model_len: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        cfg = {"model": model_path, "dtype": dtype, "max_model_len": max_model_len, "prompts": prompts,
               "max_tokens": sampling.max_tokens, "repetition_penalty": sampling.repetition_penalty,
               "result": f"{tmp}/result.json"}
        Path(f"{tmp}/cfg.json").write_text(json.dumps(cfg))
        Path(f"{tmp}/offline.py").write_text(_OFFLINE)
        proc = subprocess.run([sys.executable, f"{tmp}/offline.py", f"{tmp}/cfg.json"], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"offline LLM failed:\n{proc.stderr[-3000:]}")
        passes = json.loads(Path(cfg["result"]).read_text())
    return {**passes[-1], "cold_pass": passes[0]}


def main() -> None:
    """Measure the harness, a bare async client and vLLM's offline engine on the same cells; write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:smollm2-135m-instruct")
    parser.add_argument("--bench", default="builtin")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64, help="the harness's (as in the demo config)")
    parser.add_argument("--bare-concurrency", default="8,16,32,64")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    sampling = Sampling(max_tokens=args.max_tokens, repetition_penalty=1.05)
    prompts = _prompts(args.bench, args.split)
    base = resolve(args.model)
    spec = server_spec(base, SERVED, max_model_len=args.max_model_len, kv_cache_gib=2)
    figures: dict = {"bare": []}
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp, Serving(base, spec) as server:
        _harness(server.api_base, Path(tmp) / "warm", args, sampling)  # warms the prefix cache
        print("warm-up pass done", flush=True)
        for c in (int(x) for x in args.bare_concurrency.split(",")):
            figures["bare"].append(asyncio.run(_bare(server.api_base, prompts, sampling, c)))
            print(f"bare client: {figures['bare'][-1]}", flush=True)
        figures["harness"] = _harness(server.api_base, Path(tmp) / "measured", args, sampling)
        print(f"harness: {figures['harness']}", flush=True)
        env = server_env(spec)  # the same preloads, binding and KV cache size as the server
    figures["offline"] = _offline(base.location, spec.dtype, prompts, sampling, args.max_model_len, env)
    print(f"offline LLM.chat: {figures['offline']}", flush=True)
    best_bare = max(figures["bare"], key=lambda f: f["output_tokens_per_s"])
    ceiling = max(best_bare["output_tokens_per_s"], figures["offline"]["output_tokens_per_s"])
    result = {
        "harness_tok_s": figures["harness"]["output_tokens_per_s"],
        "bare_client_best_tok_s": best_bare["output_tokens_per_s"],
        "bare_client_best_concurrency": best_bare["concurrency"],
        "offline_tok_s": figures["offline"]["output_tokens_per_s"],
        "ratio": round(figures["harness"]["output_tokens_per_s"] / ceiling, 3),
        "ratio_definition": "harness output tok/s / max(bare async client at its best concurrency, offline LLM.chat)",
        "paths": figures, "cells": len(prompts), "model": args.model, "dtype": spec.dtype,
        "sampling": sampling.as_dict(), "bench": args.bench, "split": args.split,
    }
    write_benchmark(args.out, result)
    print(f"harness / ceiling = {result['ratio']} (harness {result['harness_tok_s']} tok/s; bare client "
          f"{result['bare_client_best_tok_s']} at concurrency {result['bare_client_best_concurrency']}; offline "
          f"{result['offline_tok_s']}); dtype {spec.dtype}; wrote {args.out}")


if __name__ == "__main__":
    main()
