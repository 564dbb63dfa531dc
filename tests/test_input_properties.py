"""Property tests: whatever bytes or JSON a bench file or a sweep config holds, loading it
gives either a valid bench / config or a located error (one naming the file, and the record
or field where there is one), never another exception."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st

from harness.bench import Bench, BenchError, load_bench
from jobs.sweep_config import ConfigError, SweepConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "harness" / "bench" / "builtin"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _records(file: Path) -> list[dict]:
    return [json.loads(line) for line in file.read_text().splitlines()]


SKILLS, TASKS = _records(BUILTIN / "skills.jsonl"), _records(BUILTIN / "tasks.jsonl")


@st.composite
def mutated(draw, records: list[dict]) -> dict:
    """A real record with a few fields replaced by random JSON, removed, or added."""
    record = copy.deepcopy(draw(st.sampled_from(records)))
    keys = sorted(record) + ["extra", draw(st.text(max_size=6))]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = draw(json_values)
    return record


def _lines(records: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _assert_bench_or_located(folder: Path, files: tuple[str, ...]) -> None:
    try:
        bench = load_bench(folder)
    except BenchError as exc:
        assert exc.file in {str(folder / f) for f in files}, exc
        assert str(exc).startswith(exc.file), exc
        event("refused")
        return
    event("accepted")
    assert isinstance(bench, Bench) and bench.skills and bench.tasks
    assert all(t.skill in bench.skills for t in bench.tasks)


def _native(skills: bytes | None, tasks: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        shutil.copytree(BUILTIN, folder)
        if skills is not None:
            (folder / "skills.jsonl").write_bytes(skills)
        if tasks is not None:
            (folder / "tasks.jsonl").write_bytes(tasks)
        _assert_bench_or_located(folder, ("skills.jsonl", "tasks.jsonl"))


@SETTINGS
@given(st.binary(max_size=400), st.booleans())
def test_native_bench_random_bytes(data, in_tasks):
    _native(None if in_tasks else data, data if in_tasks else None)


@SETTINGS
@given(st.lists(mutated(TASKS), max_size=6), st.lists(mutated(SKILLS), min_size=0, max_size=3))
def test_native_bench_random_records(tasks, skills):
    _native(_lines(SKILLS + skills), _lines(tasks))


@SETTINGS
@given(st.lists(json_values | mutated(TASKS), max_size=4), st.lists(json_values | mutated(SKILLS), max_size=3))
def test_study_bench_random_json(tasks, skills):
    """The study's format: JSON arrays, with its own field names (taken from the native records
    here, so most records are refused by field, some accepted)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "study"
        folder.mkdir()
        (folder / "skills.json").write_text(json.dumps(SKILLS + skills))
        study_tasks = [{**t, "task_uid": t.get("uid"), "output": t.get("expected"), "input": t.get("passage"),
                        "acceptance_criteria": {"skill_names": [t.get("skill")]}}
                       if isinstance(t, dict) else t for t in tasks]
        (folder / "tasks_eval.json").write_text(json.dumps(study_tasks))
        _assert_bench_or_located(folder, ("skills.json", "tasks_eval.json"))


VALID_CONFIG = {
    "name": "x",
    "bench": "builtin",
    "split": "eval",
    "conditions": ["baseline", "curated"],
    "models": [{"label": "tiny", "base": "local:tiny-qwen3",
                "adapters": [{"recipe": "recipes/smoke-lora.yaml", "seeds": [0]}]}],
    "judges": [{"label": "det", "mode": "deterministic"}],
    "statistics": {"judge": "det"},
}
CONFIG_PATHS = [("name",), ("bench",), ("split",), ("conditions",), ("conditions", 0), ("models",),
                ("models", 0, "label"), ("models", 0, "base"), ("models", 0, "include_base"),
                ("models", 0, "adapters", 0, "recipe"), ("models", 0, "adapters", 0, "seeds"),
                ("models", 0, "adapters", 0, "seeds", 0), ("models", 0, "generation"), ("judges", 0, "mode"),
                ("judges", 0, "label"), ("statistics", "judge"), ("corpus",), ("resources",)]


def _child(parent, key):
    if isinstance(parent, dict):
        return parent.get(key)
    if isinstance(parent, list) and isinstance(key, int) and len(parent) > key:
        return parent[key]
    return None


@st.composite
def configs(draw) -> dict:
    config = copy.deepcopy(VALID_CONFIG)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(CONFIG_PATHS))
        parent = config
        for key in path[:-1]:
            parent = _child(parent, key)
        last = path[-1]
        # An earlier draw may have put a list where a dict was, or the reverse: a string key
        # never indexes a list.
        if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(last, int) and len(parent) > last):
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
    return config


def _assert_config_or_located(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "recipes").mkdir()
        shutil.copy(ROOT / "eval_configs" / "recipes" / "smoke-lora.yaml", Path(tmp) / "recipes")
        path = Path(tmp) / "sweep.yaml"
        path.write_bytes(text)
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), exc
            event("refused")
            return
        event("accepted")
        assert isinstance(config, SweepConfig)


@SETTINGS
@given(configs())
def test_sweep_config_random_fields(config):
    _assert_config_or_located(yaml.safe_dump(config).encode())


@SETTINGS
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_sweep_config_random_bytes(data):
    _assert_config_or_located(data)


def test_valid_config_stays_valid():
    """The base the mutations start from is itself accepted (so accepted cases are reached)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "recipes").mkdir()
        shutil.copy(ROOT / "eval_configs" / "recipes" / "smoke-lora.yaml", Path(tmp) / "recipes")
        (Path(tmp) / "sweep.yaml").write_text(yaml.safe_dump(VALID_CONFIG))
        assert load_config(Path(tmp) / "sweep.yaml").models[0].adapters[0].recipe == \
            str(Path(tmp) / "recipes" / "smoke-lora.yaml")


@SETTINGS
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",))), min_size=1, max_size=5))
def test_journal_rows_survive_any_reply_text(texts):
    """A model's reply may hold U+2028, U+0085 or other line separators: every row written comes
    back whole, so a resume never redoes (or, for a teacher, re-calls) a finished unit."""
    from harness.runstore import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        with RunStore(Path(tmp) / "run") as store:
            for i, text in enumerate(texts):
                store.append({"cell_id": f"c{i}", "response": text})
        with RunStore(Path(tmp) / "run") as store:
            assert [r["response"] for r in store.rows()] == texts


def test_journal_keeps_a_reply_with_unicode_line_separators(tmp_path):
    from harness.runstore import RunStore

    reply = "first\u2028second\x85third\x1cfourth\r\n"
    with RunStore(tmp_path / "run") as store:
        store.append({"cell_id": "a", "response": reply})
    with RunStore(tmp_path / "run") as store:
        assert store.done_ids() == {"a"} and store.latest()["a"]["response"] == reply
