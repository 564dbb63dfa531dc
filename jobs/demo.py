"""``make demo``: the embedded default end to end on what exists so far.

Prepares the demo model, writes a seeded random LoRA adapter for it (a stand-in until the
training recipes exist), serves both on one vLLM server, checks the adapter is applied,
and asks one procedural question under the study's two conditions, base vs adapter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.client import Sampling, build_messages, chat
from harness.models import resolve
from serve.adapters import inspect_adapter, lora_limits
from serve.registry import AdapterRegistry
from serve.server import ServerSpec, VLLMServer
from train.random_adapter import make_random_adapter

DEMO_MODEL = "local:smollm2-135m-instruct"
SOLVER = "You are a careful reasoner. Think step by step, then end with a line 'ANSWER: <answer>'."
SKILL_BLOCK = """SKILL: affirming-the-consequent
Procedure:
1. Rewrite the argument as 'If P then Q' plus the observed fact.
2. Check whether the observed fact is Q (the consequent) rather than P.
3. If the argument concludes P from Q, it affirms the consequent and is invalid.
4. Answer yes if the fallacy is present, otherwise no."""
QUESTION = ("Argument: if it rained, the street is wet. The street is wet, so it rained. "
            "Does this argument affirm the consequent? Answer yes or no.")


def run_demo(out: Path, console: Console) -> dict:
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    base = resolve(DEMO_MODEL)
    adapter_dir = out / "adapters" / "random-r8-s0"
    if not (adapter_dir / "adapter_config.json").exists():
        make_random_adapter(base.location, adapter_dir, rank=8, seed=0, scale=0.02)
    info = inspect_adapter(adapter_dir)
    rank, slots = lora_limits([info])
    spec = ServerSpec(model=base.location, served_name="smollm2", enable_lora=True,
                      max_lora_rank=rank, max_loras=slots, max_model_len=2048)
    console.print(f"starting vLLM on {DEMO_MODEL} …")
    with VLLMServer(spec, base_identity=base.identity) as server:
        registry = AdapterRegistry(server.api_base, base, "smollm2", rank)
        loaded, report = registry.load("demo", adapter_dir)
        console.print(report.describe())
        conditions = {"baseline": SOLVER, "curated": f"{SOLVER}\n\n{SKILL_BLOCK}"}
        rows = []
        for model in ("smollm2", loaded.served_name):
            for condition, system in conditions.items():
                reply = chat(server.api_base, model, build_messages(QUESTION, system),
                             Sampling(max_tokens=160, repetition_penalty=1.05))
                rows.append({"model": model, "condition": condition, "response": reply.text,
                             "completion_tokens": reply.completion_tokens,
                             "latency_s": round(reply.latency_s, 3)})
    table = Table("model", "condition", "response (first 200 chars)")
    for row in rows:
        table.add_row(row["model"], row["condition"], row["response"][:200])
    console.print(table)
    summary = {"model": DEMO_MODEL, "adapter": loaded.served_name, "adapter_hash": info.content_hash,
               "preflight_differing": report.differing, "rows": rows,
               "wall_s": round(time.time() - started, 1)}
    (out / "probe.json").write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {out / 'probe.json'} in {summary['wall_s']} s")
    return summary
