"""Importing the original study's episode logs into a run folder.

An ``episodes.json`` is a JSON array of objects with ``task_uid``, ``model``, ``condition``
(``baseline``/``curated``), ``skill_name`` (empty for baseline), ``response``, ``passed``,
``score`` and optional ``judge_rationale``, ``tokens``, ``elapsed_s``. Each file becomes
episodes (keyed by model label, task and condition, so several files of one model share
them) plus one verdict set under the given judge label.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from harness.bench import bench_spec
from harness.errors import SkillsweepError
from harness.judging.job import verdict_id
from harness.runstore import RunStore, read_manifest, run_dir
from harness.schema import CELL_COLUMNS, EPISODE_TYPES, VERDICT_TYPES, row

REQUIRED = ("task_uid", "condition", "passed")


class ImportError_(SkillsweepError, ValueError):
    pass


def _split_model(model: str) -> tuple[str, str | None]:
    """The study's model strings: ``base:Qwen/Qwen3.5-2B`` or ``Qwen/Qwen3.5-2B+lora:NAME``."""
    if "+lora:" in model:
        base, adapter = model.split("+lora:", 1)
        return base, adapter
    return model.removeprefix("base:"), None


def _task_info(tasks_json: Path | None) -> dict[str, dict]:
    if tasks_json is None:
        return {}
    try:
        tasks = json.loads(tasks_json.read_text())
    except (OSError, ValueError) as exc:
        raise ImportError_(f"{tasks_json}: cannot read tasks: {exc}") from exc
    info = {}
    for t in tasks:
        names = (t.get("acceptance_criteria") or {}).get("skill_names") or []
        info[t["task_uid"]] = {"skill": names[0] if names else None, "query_type": t.get("query_type")}
    return info


def import_skillmix(episodes_json: Path, out: str | Path, *, model_label: str, judge_label: str, mode: str,
                    tasks_json: Path | None = None, size: str | None = None, base: str | None = None,
                    stage: str | None = None) -> dict:
    """Import skillmix episodes and their verdicts as a run this harness can analyse; returns a summary."""
    try:
        records = json.loads(Path(episodes_json).read_text())
    except (OSError, ValueError) as exc:
        raise ImportError_(f"{episodes_json}: cannot read episodes: {exc}") from exc
    if not isinstance(records, list):
        raise ImportError_(f"{episodes_json}: expected a JSON array of episodes")
    tasks = _task_info(tasks_json)
    skills_from_curated = {r.get("task_uid"): r.get("skill_name") for r in records
                           if isinstance(r, dict) and r.get("skill_name")}
    folder = run_dir(out)
    episodes, verdicts = [], []
    now = time.time()
    for index, r in enumerate(records):
        if not isinstance(r, dict):
            raise ImportError_(f"{episodes_json}, record #{index}: expected an object")
        missing = [f for f in REQUIRED if f not in r]
        if missing:
            raise ImportError_(f"{episodes_json}, record #{index} ({r.get('task_uid', '?')}): "
                               f"field '{missing[0]}' missing")
        if r["condition"] not in ("baseline", "curated"):
            raise ImportError_(f"{episodes_json}, record #{index} ({r['task_uid']}), field 'condition': "
                               f"{r['condition']!r} is not baseline/curated")
        model_base, adapter = _split_model(str(r.get("model", "")))
        info = tasks.get(r["task_uid"], {})
        cell = hashlib.sha256(json.dumps(["skillmix", model_label, r["task_uid"], r["condition"]]).encode()
                              ).hexdigest()[:32]
        is_post = stage == "post" if stage else adapter is not None
        # The log holds less than a generated episode: the rest of the schema's columns are null.
        episode = row(EPISODE_TYPES, {
            "cell_id": cell, "run": folder.name, "model_label": model_label, "base_model": base or model_base or None,
            "adapter_name": adapter, "adapter_hash": f"imported:{adapter or model_label}" if is_post else None,
            "backend": "imported", "task_uid": r["task_uid"],
            "skill": info.get("skill") or r.get("skill_name") or skills_from_curated.get(r["task_uid"]),
            "query_type": info.get("query_type"), "condition": r["condition"], "prompt_hash": None,
            "temperature": None, "max_tokens": None, "repetition_penalty": None,
            "response": r.get("response") or "", "final": r.get("response") or "",
            "completion_tokens": r.get("tokens"), "latency_s": r.get("elapsed_s"),
        }, partial=True)
        passed = r["passed"]
        verdicts.append(row(VERDICT_TYPES, {
            "verdict_id": verdict_id(cell, judge_label, mode), **{k: episode[k] for k in CELL_COLUMNS},
            "judge_label": judge_label, "mode": mode, "judge_kind": "imported", "judge": judge_label,
            "prompt_version": "skillmix", "passed": None if passed is None else bool(passed),
            "score": r.get("score"), "unscored_reason": "no verdict in the imported log" if passed is None else None,
            "rule": None, "extracted": None, "rationale": r.get("judge_rationale"), "criteria_met": "[]",
            "prompt_tokens": None, "completion_tokens": None, "cost_usd": None, "latency_s": None,
            "attempts": 0, "judged_at": now,
        }, partial=True))
        episodes.append(episode)
    with RunStore(folder) as store:
        done = store.done_ids()
        for e in episodes:
            if e["cell_id"] not in done:
                store.append(e)
                done.add(e["cell_id"])
        store.write_table()
        manifest = read_manifest(folder)
        models = manifest.get("models", {})
        models[model_label] = {k: v for k, v in {"size": size, "base": base, "stage": stage}.items() if v} \
            | models.get(model_label, {})
        bench = {}
        if tasks_json and (Path(tasks_json).parent / "skills.json").is_file():
            bench = {"bench": {"spec": bench_spec(Path(tasks_json).parent), "name": "skillmix"}}
        sources = manifest.get("imported_from", []) + [{"file": str(episodes_json), "model_label": model_label,
                                                       "judge_label": judge_label, "mode": mode}]
        store.update_manifest(models=models, imported_from=sources, **bench)
    with RunStore(folder, "verdicts", "verdict_id", keep="last") as vstore:
        for v in verdicts:
            vstore.append(v)
        vstore.write_table()
    return {"run_dir": str(folder), "episodes": len(episodes), "verdicts": len(verdicts),
            "model_label": model_label, "judge_label": judge_label}
