"""Bench records, the built-in bench, the native format and the study importer."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness.bench import BenchError, QueryType, bench_spec, load_bench
from harness.bench.load import write_native

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "skillmix"
needs_shared = pytest.mark.skipif(not (SHARED / "tasks_eval.json").is_file(),
                                  reason="../shared/reference/skillmix not present")


def test_builtin_bench_shape():
    bench = load_bench("builtin")
    assert len(bench.skills) >= 8 and len(bench.tasks) >= 48
    assert len({s.category for s in bench.skills.values()}) >= 5
    for split in ("train", "eval"):
        types = {t.query_type for t in bench.split(split)}
        assert types == set(QueryType), f"{split} split misses {set(QueryType) - types}"
    train = {t.uid for t in bench.split("train")}
    evals = {t.uid for t in bench.split("eval")}
    assert train and evals and not train & evals
    # Every skill is exercised in evaluation, and yes/no answers are not all the same.
    assert {t.skill for t in bench.split("eval")} == set(bench.skills)
    yes_no = Counter(t.expected for t in bench.tasks if t.query_type in (QueryType.YES_NO, QueryType.YES_NO_VERIFICATION))
    assert set(yes_no) == {"yes", "no"} and min(yes_no.values()) >= 8


def test_native_round_trip(tmp_path):
    bench = load_bench("builtin")
    write_native(bench, tmp_path / "copy")
    again = load_bench(tmp_path / "copy")
    assert again.name == "copy"
    assert again.tasks == bench.tasks and again.skills == bench.skills


def _native_copy(tmp_path) -> Path:
    folder = tmp_path / "bench"
    shutil.copytree(Path(__file__).resolve().parents[1] / "harness" / "bench" / "builtin", folder)
    return folder


def _rewrite_line(file: Path, index: int, change) -> None:
    lines = file.read_text().splitlines()
    lines[index] = change(lines[index])
    file.write_text("\n".join(lines) + "\n")


def _edit(field, value):
    def change(line):
        obj = json.loads(line)
        if value is None:
            obj.pop(field)
        else:
            obj[field] = value
        return json.dumps(obj)
    return change


@pytest.mark.parametrize("file, index, change, pattern", [
    ("tasks.jsonl", 2, lambda line: line[:-5], r"tasks.jsonl, record line 3: not valid JSON"),
    ("tasks.jsonl", 4, _edit("query_type", "ESSAY"), r"tasks.jsonl, record line 5 \(bi-atc-05\), field 'query_type'"),
    ("tasks.jsonl", 0, _edit("expected", None), r"record line 1 \(bi-atc-01\), field 'expected': Field required"),
    ("tasks.jsonl", 1, _edit("uid", "bi-atc-01"), r"record line 2 \(bi-atc-01\), field 'uid': duplicate task uid"),
    ("tasks.jsonl", 3, _edit("skill", "no-such-skill"), r"field 'skill': unknown skill 'no-such-skill'"),
    ("tasks.jsonl", 3, _edit("split", "test"), r"field 'split'"),
    ("tasks.jsonl", 3, _edit("colour", "red"), r"field 'colour': Extra inputs are not permitted"),
    ("skills.jsonl", 1, _edit("procedure", []), r"skills.jsonl, record line 2 \(base-rate-neglect\), field 'procedure'"),
])
def test_malformed_native_bench_names_file_record_field(tmp_path, file, index, change, pattern):
    folder = _native_copy(tmp_path)
    _rewrite_line(folder / file, index, change)
    with pytest.raises(BenchError, match=pattern):
        load_bench(folder)


def test_missing_bench_and_unknown_layout(tmp_path):
    with pytest.raises(BenchError, match="bench not found"):
        load_bench(tmp_path / "nope")
    with pytest.raises(BenchError, match="neither a native bench"):
        load_bench(tmp_path)


@needs_shared
def test_study_import_matches_published_mix():
    bench = load_bench(SHARED)
    assert len(bench.skills) == 40 and len(bench.tasks) == 200
    mix = Counter(t.query_type.value for t in bench.tasks)
    assert mix == {"YES_NO": 122, "FREE_FORM": 33, "SINGLE_WORD": 23, "RANKING": 22}
    assert Counter(t.skill for t in bench.tasks) == {s: 5 for s in bench.skills}
    mapping = json.loads((SHARED / "task_skill_map_eval.json").read_text())
    assert all(mapping[t.uid] == t.skill for t in bench.tasks)
    skill = bench.skills["self-serving-bias"]
    assert skill.example_positive and skill.example_negative and len(skill.procedure) >= 5
    assert not skill.example_positive.startswith("Positive")


@needs_shared
def test_study_import_errors_name_the_record(tmp_path):
    for name in ("skills.json", "tasks_eval.json"):
        shutil.copy(SHARED / name, tmp_path / name)
    tasks = json.loads((tmp_path / "tasks_eval.json").read_text())
    del tasks[7]["question"]
    (tmp_path / "tasks_eval.json").write_text(json.dumps(tasks))
    with pytest.raises(BenchError, match=rf"tasks_eval.json, record #7 \({tasks[7]['task_uid']}\), field 'question'"):
        load_bench(tmp_path)
    tasks[7]["question"] = "?"
    tasks[9]["query_type"] = "ESSAY"
    (tmp_path / "tasks_eval.json").write_text(json.dumps(tasks))
    with pytest.raises(BenchError, match=r"record #9 .*field 'query_type'"):
        load_bench(tmp_path)
    (tmp_path / "skills.json").write_text("{not json")
    with pytest.raises(BenchError, match=r"skills.json: not valid JSON"):
        load_bench(tmp_path)


def test_bench_spec_is_builtin_or_an_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bench_spec("builtin") == "builtin"
    assert bench_spec("benches/mine") == str(tmp_path / "benches" / "mine")
    assert bench_spec("~/mine") == str(tmp_path / "mine")
