"""Bench records: skills (procedures) and tasks (questions that need them)."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.errors import SkillsweepError


class QueryType(str, Enum):
    YES_NO = "YES_NO"
    # A proposed answer or conclusion is shown; the solver says whether it is correct.
    YES_NO_VERIFICATION = "YES_NO_VERIFICATION"
    SINGLE_WORD = "SINGLE_WORD"
    RANKING = "RANKING"
    FREE_FORM = "FREE_FORM"


class BenchError(SkillsweepError, ValueError):
    """A bench file that cannot be used; names the file, the record and the field."""

    def __init__(self, file: str, record: str | None, field: str | None, message: str):
        where = file + (f", record {record}" if record else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")
        self.file, self.record, self.field = file, record, field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Skill(_Record):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    category: str = Field(min_length=1)
    description: str = Field(min_length=1)
    procedure: list[str] = Field(min_length=1)
    when_to_use: str = ""
    constraints: list[str] = []
    example_positive: str = ""
    example_negative: str = ""
    uid: str | None = None


class Task(_Record):
    uid: str = Field(min_length=1)
    skill: str = Field(min_length=1)
    query_type: QueryType
    question: str = Field(min_length=1)
    passage: str = ""
    expected: str = Field(min_length=1)
    must_identify: list[str] = []
    correct_conclusion: str = ""
    split: Literal["train", "eval"]
    title: str = ""
    difficulty: str | None = None

    @field_validator("expected")
    @classmethod
    def _expected_nonblank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected answer is blank")
        return v


SPLITS = ("eval", "train", "all")


class Bench(_Record):
    name: str
    skills: dict[str, Skill]
    tasks: tuple[Task, ...]

    def split(self, split: str | None) -> list[Task]:
        """The tasks of a split; an unknown or empty split is an error (it would plan no work)."""
        if split is not None and split not in SPLITS:
            raise BenchError(f"bench {self.name!r}", None, None,
                             f"unknown split {split!r}: expected {', '.join(SPLITS)}")
        tasks = [t for t in self.tasks if split in (None, "all") or t.split == split]
        if not tasks:
            present = sorted({t.split for t in self.tasks})
            raise BenchError(f"bench {self.name!r}", None, None,
                             f"no tasks in split {split!r} (splits present: {', '.join(present) or 'none'})")
        return tasks

    def skill_of(self, task: Task) -> Skill:
        return self.skills[task.skill]

    def content_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
