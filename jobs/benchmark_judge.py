"""Judge throughput: the async fan-out vs one call at a time, against the same local server.

Starts one vLLM server (a judge with schema-constrained JSON), generates a real run on it,
then judges every episode twice in llm-only mode under two labels: sequentially
(concurrency 1) and through the fan-out. Writes ``results/benchmarks/judge.json``.

    python -m jobs.benchmark_judge [--model local:tiny-qwen3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.judging.job import JudgeRequest, run_judging
from harness.judging.verdict import Mode
from harness.models import resolve
from serve.server import COMPACT_JSON_ARGS
from serve.serving import Serving, server_spec

OUT = Path("results/benchmarks/judge.json")


def main() -> None:
    """Measure judging throughput, async fan-out against one call at a time, on a local judge server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:tiny-qwen3")
    parser.add_argument("--split", default="all")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    base = resolve(args.model)
    spec = server_spec(base, "judge", max_model_len=4096, extra_args=COMPACT_JSON_ARGS)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp, Serving(base, spec) as serving:
        server = serving.server
        run = f"{tmp}/run"
        run_generation(GenerateRequest(run=run, model="judge", url=server.base_url, split=args.split,
                                       sampling=Sampling(max_tokens=48)))
        for name, concurrency in (("sequential", 1), ("fanout", args.concurrency)):
            started = time.perf_counter()
            summary = run_judging(JudgeRequest(run=run, mode=Mode.LLM_ONLY, judge_model="hosted_vllm/judge",
                                               api_base=server.api_base, label=name, concurrency=concurrency))
            wall = time.perf_counter() - started
            stats = summary.stats
            figures[name] = {"verdicts": stats.judged, "unscored": stats.unscored, "calls": stats.calls,
                             "concurrency": concurrency, "wall_s": round(wall, 2),
                             "verdicts_per_s": round(stats.judged / wall, 3)}
            print(f"{name}: {figures[name]}", flush=True)
    result = {
        "fanout": figures["fanout"],
        "sequential": figures["sequential"],
        "ratio": round(figures["fanout"]["verdicts_per_s"] / figures["sequential"]["verdicts_per_s"], 2),
        "ratio_definition": "fan-out verdicts/s over sequential verdicts/s, same server and episodes",
        "judge_model": args.model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio (fan-out / sequential verdicts per second): {result['ratio']}x; wrote {args.out}")


if __name__ == "__main__":
    main()
