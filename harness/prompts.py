"""Solver prompt, skill blocks, and the conditions a task is rendered under.

A condition decides only which skill block (if any) joins the solver system prompt; the user
message is the same under every condition, so two conditions' prompts differ exactly by the
block. New conditions register a function here or are declared in a config.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from harness.bench.model import Bench, QueryType, Skill, Task
from harness.errors import SkillsweepError

PROMPT_VERSION = "solver-v1"


class ConditionError(SkillsweepError, ValueError):
    """A condition list, or a condition this bench cannot render."""

SOLVER_PROMPT = (
    "You are a careful problem solver. Read the passage and the question, reason step by step, "
    "and then give your final answer on its own last line in the form 'ANSWER: <answer>'."
)

_FORMAT = {
    QueryType.YES_NO: "Answer with yes or no. End with a line 'ANSWER: yes' or 'ANSWER: no'.",
    QueryType.YES_NO_VERIFICATION: "Answer with yes or no. End with a line 'ANSWER: yes' or 'ANSWER: no'.",
    QueryType.SINGLE_WORD: "End with a line 'ANSWER: <one word or number>'.",
    QueryType.RANKING: "End with a line 'ANSWER: <your choice or ordering, as the question asks>'.",
    QueryType.FREE_FORM: "Explain your reasoning, then state your conclusion on a final line 'ANSWER: <conclusion>'.",
}


def skill_block(skill: Skill) -> str:
    """A skill as the model reads it in a system prompt: description, procedure, constraints, examples."""
    lines = [f"## Skill: {skill.name} ({skill.category})", skill.description]
    if skill.when_to_use:
        lines += ["", f"When to use: {skill.when_to_use}"]
    lines += ["", "Procedure:"] + [f"{i}. {step}" for i, step in enumerate(skill.procedure, 1)]
    if skill.constraints:
        lines += ["", "Constraints:"] + [f"- {c}" for c in skill.constraints]
    if skill.example_positive or skill.example_negative:
        lines += ["", "Examples:"]
        lines += [f"Positive: {skill.example_positive}"] if skill.example_positive else []
        lines += [f"Negative: {skill.example_negative}"] if skill.example_negative else []
    return "\n".join(lines)


def user_message(task: Task) -> str:
    """The user turn for a task: its passage if any, the question, and the answer format."""
    parts = [f"Passage:\n{task.passage}"] if task.passage else []
    parts += [f"Question: {task.question}", _FORMAT[task.query_type]]
    return "\n\n".join(parts)


ROUTING_HEADER = (
    "Several skills follow. Not all of them fit this task: decide which one does, "
    "and apply that skill's procedure."
)


def routing_block(skills: list[Skill]) -> str:
    """The system prompt's block offering several skills for the model to choose from."""
    return "\n\n".join([ROUTING_HEADER] + [skill_block(s) for s in skills])


# A condition maps (bench, task) to the skill whose block is injected, a list of skills shown
# together (routing), or None.
ConditionFn = Callable[[Bench, Task], Skill | list[Skill] | None]
CONDITIONS: dict[str, ConditionFn] = {}


def register_condition(name: str) -> Callable[[ConditionFn], ConditionFn]:
    """Decorator registering a prompt condition under ``name`` (see :data:`CONDITIONS`)."""
    def decorate(fn: ConditionFn) -> ConditionFn:
        CONDITIONS[name] = fn
        return fn
    return decorate


@register_condition("baseline")
def _baseline(bench: Bench, task: Task) -> Skill | None:
    return None


@register_condition("curated")
def _curated(bench: Bench, task: Task) -> Skill:
    return bench.skill_of(task)


@register_condition("mismatched")
def _mismatched(bench: Bench, task: Task) -> Skill:
    """Another skill's block, chosen deterministically: controls for 'any procedure helps'.

    Prefers a skill of another category, so the block is not a near-duplicate."""
    names = sorted(bench.skills)
    own = bench.skill_of(task)
    others = [n for n in names if bench.skills[n].category != own.category] or [n for n in names if n != own.name]
    if not others:
        raise ConditionError(f"bench {bench.name!r} has one skill: no mismatched block for {task.uid}")
    pick = int(hashlib.sha256(task.uid.encode()).hexdigest(), 16) % len(others)
    return bench.skills[others[pick]]


ROUTING_K = 3
_ROUTING_NAME = re.compile(r"^routing(?:-k(?P<k>\d+))?(?:-s(?P<seed>\d+))?$")


def routing_condition(k: int = ROUTING_K, seed: int = 0) -> ConditionFn:
    """The task's own skill among ``k - 1`` skills of other categories, in a seeded order: the
    bench then also measures whether the model picks the right procedure."""
    if k < 2:
        raise ValueError(f"routing needs k >= 2 (the own skill and at least one other), got k={k}")

    def choose(bench: Bench, task: Task) -> list[Skill]:
        own = bench.skill_of(task)
        others = sorted(n for n, s in bench.skills.items() if s.category != own.category)
        if len(others) < k - 1:
            raise ValueError(f"routing k={k} on bench {bench.name!r}: task {task.uid} ({own.category}) has only "
                             f"{len(others)} skill(s) of other categories, needs {k - 1}")
        rng = random.Random(f"routing:{seed}:{task.uid}")
        shown = [own] + [bench.skills[n] for n in rng.sample(others, k - 1)]
        rng.shuffle(shown)
        return shown

    return choose


def _register_routing(name: str) -> bool:
    """``routing`` (k=3), ``routing-k5``, ``routing-k4-s1``: registered on first use."""
    match = _ROUTING_NAME.match(name)
    if not match:
        return False
    CONDITIONS[name] = routing_condition(int(match["k"] or ROUTING_K), int(match["seed"] or 0))
    return True


_register_routing("routing")


def condition_names(spec: str | list[str]) -> list[str]:
    """The condition names in a spec (comma-separated or a list), checked: known, unique, at least one."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    for name in names:
        if name not in CONDITIONS:
            _register_routing(name)
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise ConditionError(f"unknown condition(s) {unknown or spec!r}; known: {', '.join(sorted(CONDITIONS))}"
                             " (and routing-kN[-sSEED] for any k and seed)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConditionError(f"condition(s) {', '.join(repeated)} listed more than once; each may appear once")
    return names


class TaskLike(Protocol):
    """What generation reads of a prompt's task: a bench :class:`Task`, or a probe standing in for one."""

    @property
    def uid(self) -> str: ...

    @property
    def skill(self) -> str: ...

    @property
    def query_type(self) -> Enum: ...


@dataclass(frozen=True)
class RenderedPrompt:
    task: TaskLike
    condition: str
    skill_block: str | None
    messages: tuple[dict, ...]

    @property
    def hash(self) -> str:
        return prompt_hash(self.messages)


def prompt_hash(messages) -> str:
    """A hash of the exact messages sent, so a changed prompt is a new cell."""
    blob = json.dumps(list(messages), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def render(bench: Bench, task: Task, condition: str) -> RenderedPrompt:
    """The messages for a task under a condition: the solver prompt, the condition's skill block, the task."""
    if condition not in CONDITIONS:
        condition_names([condition])
    chosen = CONDITIONS[condition](bench, task)
    block = routing_block(chosen) if isinstance(chosen, list) else skill_block(chosen) if chosen else None
    system = f"{SOLVER_PROMPT}\n\n{block}" if block else SOLVER_PROMPT
    messages = ({"role": "system", "content": system}, {"role": "user", "content": user_message(task)})
    return RenderedPrompt(task, condition, block, messages)
