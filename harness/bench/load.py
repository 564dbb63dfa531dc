"""Reading benches: the native format, the built-in bench, and the original study's files.

Native format: a folder with ``skills.jsonl`` and ``tasks.jsonl``, one JSON object per line,
fields as in :mod:`harness.bench.model`. Lines are numbered in errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from harness.bench.model import Bench, BenchError, QueryType, Skill, Task

BUILTIN_DIR = Path(__file__).parent / "builtin"
M = TypeVar("M", bound=BaseModel)


def _validation_error(file: Path, record: str, exc: ValidationError) -> BenchError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    return BenchError(str(file), record, field, first["msg"])


def _decode(file: Path, data: bytes, record: str | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = record or f"line {line}"
        raise BenchError(str(file), where, None, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
                                                 f"{exc.start}; save the file as UTF-8") from None


def _read_bytes(file: Path) -> bytes:
    if not file.is_file():
        raise BenchError(str(file), None, None, "file not found")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise BenchError(str(file), None, None, f"cannot read: {exc.strerror or exc}") from None


def _read_jsonl(file: Path) -> Iterable[tuple[int, dict]]:
    for lineno, raw in enumerate(_read_bytes(file).split(b"\n"), 1):
        line = _decode(file, raw, f"line {lineno}")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise BenchError(str(file), f"line {lineno}", None, f"not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BenchError(str(file), f"line {lineno}", None, "expected a JSON object")
        yield lineno, obj


def _read_json(file: Path, kind: type, what: str):
    try:
        data = json.loads(_decode(file, _read_bytes(file), None))
    except (ValueError, RecursionError) as exc:
        raise BenchError(str(file), None, None, f"not valid JSON: {exc}") from None
    if not isinstance(data, kind):
        raise BenchError(str(file), None, None, f"expected {what}")
    return data


def _read_json_array(file: Path) -> list:
    return _read_json(file, list, "a JSON array of records")


def _assemble(name: str, skills: list[tuple[str, str, Skill]], tasks: list[tuple[str, str, Task]],
              files: tuple[Path, Path]) -> Bench:
    """Cross-record checks: some skills and tasks, unique names and uids, every task's skill exists."""
    for path, records in zip(files, (skills, tasks), strict=True):
        if not records:
            raise BenchError(str(path), None, None, "no records: a bench needs at least one skill and one task")
    by_name: dict[str, Skill] = {}
    for file, record, skill in skills:
        if skill.name in by_name:
            raise BenchError(file, record, "name", f"duplicate skill name {skill.name!r}")
        by_name[skill.name] = skill
    seen: set[str] = set()
    for file, record, task in tasks:
        if task.uid in seen:
            raise BenchError(file, record, "uid", f"duplicate task uid {task.uid!r}")
        seen.add(task.uid)
        if task.skill not in by_name:
            raise BenchError(file, record, "skill", f"unknown skill {task.skill!r}")
    return Bench(name=name, skills=by_name, tasks=tuple(t for _, _, t in tasks))


def unique_records(file: Path, model, key: str, noun: str) -> list:
    """The records of a native JSONL file of ``model``, each ``key`` once; a located error
    for a repeated key or an empty file."""
    records = _native_records(Path(file), model, key)
    seen: set[str] = set()
    for path, record, item in records:
        value = getattr(item, key)
        if value in seen:
            raise BenchError(path, record, key, f"duplicate {noun} {key} {value!r}")
        seen.add(value)
    if not records:
        raise BenchError(str(file), None, None, f"no {noun}s")
    return [item for _, _, item in records]


def _native_records(file: Path, model: type[M], key: str) -> list[tuple[str, str, M]]:
    out = []
    for lineno, obj in _read_jsonl(file):
        record = f"line {lineno} ({str(obj.get(key, '?'))[:80]})"
        try:
            out.append((str(file), record, model.model_validate(obj)))
        except ValidationError as exc:
            raise _validation_error(file, record, exc) from None
    return out


def load_native(folder: Path, name: str | None = None) -> Bench:
    """A bench from a folder holding ``skills.jsonl`` and ``tasks.jsonl``, checked across records."""
    files = (folder / "skills.jsonl", folder / "tasks.jsonl")
    return _assemble(name or folder.name, _native_records(files[0], Skill, "name"),
                     _native_records(files[1], Task, "uid"), files)


def write_native(bench: Bench, folder: Path) -> None:
    """Write a bench as ``skills.jsonl`` and ``tasks.jsonl`` (the form :func:`load_native` reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "skills.jsonl").open("w") as f:
        for skill in bench.skills.values():
            f.write(json.dumps(skill.model_dump(mode="json", exclude_defaults=True)) + "\n")
    with (folder / "tasks.jsonl").open("w") as f:
        for task in bench.tasks:
            f.write(json.dumps(task.model_dump(mode="json", exclude_defaults=True)) + "\n")


_EXAMPLE = re.compile(r"Positive:\s*(?P<pos>.*?)\s*(?:\n\s*)?Negative:\s*(?P<neg>.*)\Z", re.S)


def _study_skill(raw: dict) -> Skill:
    example = _EXAMPLE.match(raw.get("example") or "")
    return Skill(
        name=raw["name"],
        category=raw["category"],
        description=raw["description"],
        procedure=raw["procedure"],
        when_to_use=raw.get("when_to_use") or "",
        constraints=raw.get("constraints") or [],
        example_positive=example["pos"] if example else (raw.get("example") or ""),
        example_negative=example["neg"] if example else "",
        uid=raw.get("skill_uid"),
    )


def _study_task(raw: dict, split: str, skill_map: dict[str, str]) -> Task:
    criteria = raw.get("acceptance_criteria") or {}
    names = criteria.get("skill_names") or []
    skill = skill_map.get(raw.get("task_uid", "")) or (names[0] if names else "")
    return Task(
        uid=raw["task_uid"],
        skill=skill,
        query_type=QueryType(raw["query_type"]),
        question=raw["question"],
        passage=raw.get("input") or "",
        expected=str(raw["output"]),
        must_identify=criteria.get("must_identify") or [],
        correct_conclusion=str(criteria.get("correct_conclusion") or ""),
        split=split,
        title=raw.get("title") or "",
        difficulty=raw.get("difficulty"),
    )


def _convert(file: Path, raws: list, make, key: str) -> list:
    out = []
    for index, raw in enumerate(raws):
        record = f"#{index} ({str(raw.get(key, '?'))[:80] if isinstance(raw, dict) else '?'})"
        if not isinstance(raw, dict):
            raise BenchError(str(file), record, None, "expected a JSON object")
        try:
            out.append((str(file), record, make(raw)))
        except KeyError as exc:
            raise BenchError(str(file), record, exc.args[0], "required field missing") from None
        except (TypeError, AttributeError) as exc:  # a field of the wrong JSON type
            raise BenchError(str(file), record, None, f"a field has the wrong type: {exc}") from None
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise _validation_error(file, record, exc) from None
            field = "query_type" if "QueryType" in str(exc) else None
            raise BenchError(str(file), record, field, str(exc)) from None
    return out


def load_study(folder: Path, name: str | None = None) -> Bench:
    """The original study's files: ``skills.json``, ``tasks_eval.json`` and optionally
    ``tasks_train.json`` (same shape), with ``task_skill_map_eval.json`` if present."""
    skills = _convert(folder / "skills.json", _read_json_array(folder / "skills.json"), _study_skill, "name")
    skill_map: dict[str, str] = {}
    map_file = folder / "task_skill_map_eval.json"
    if map_file.is_file():
        skill_map = _read_json(map_file, dict, "a JSON object mapping task uids to skill names")
    tasks = []
    for split, filename in (("train", "tasks_train.json"), ("eval", "tasks_eval.json")):
        file = folder / filename
        if file.is_file() or split == "eval":
            tasks += _convert(file, _read_json_array(file),
                              lambda raw, s=split: _study_task(raw, s, skill_map), "task_uid")
    return _assemble(name or folder.name, skills, tasks, (folder / "skills.json", folder / "tasks_eval.json"))


def bench_spec(spec: str | Path) -> str:
    """A bench reference as recorded in a manifest and passed to workers: ``builtin``, or the
    folder's absolute path (so it means the same from any working directory)."""
    return "builtin" if str(spec) == "builtin" else str(Path(spec).expanduser().resolve())


def load_bench(spec: str | Path) -> Bench:
    """``builtin``, a native bench folder, or a folder of the study's files."""
    if str(spec) == "builtin":
        return load_native(BUILTIN_DIR, "builtin")
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise BenchError(str(folder), None, None, "bench not found: expected 'builtin' or a folder")
    if (folder / "skills.jsonl").is_file():
        return load_native(folder)
    if (folder / "skills.json").is_file():
        return load_study(folder)
    raise BenchError(str(folder), None, None,
                     "neither a native bench (skills.jsonl, tasks.jsonl) nor study files (skills.json, tasks_eval.json)")
