import pytest

from harness.bench import load_bench
from harness.prompts import CONDITIONS, SOLVER_PROMPT, condition_names, render, skill_block


@pytest.fixture(scope="module")
def bench():
    return load_bench("builtin")


def test_conditions_differ_exactly_by_the_skill_block(bench):
    for task in bench.tasks:
        base = render(bench, task, "baseline")
        cur = render(bench, task, "curated")
        assert base.messages[1] == cur.messages[1]  # identical user message
        assert base.messages[0]["content"] == SOLVER_PROMPT
        block = skill_block(bench.skill_of(task))
        assert cur.skill_block == block
        assert cur.messages[0]["content"] == SOLVER_PROMPT + "\n\n" + block
        assert base.hash != cur.hash


def test_skill_block_carries_the_procedure(bench):
    skill = bench.skills["base-rate-neglect"]
    block = skill_block(skill)
    for i, step in enumerate(skill.procedure, 1):
        assert f"{i}. {step}" in block
    assert skill.constraints[0] in block and skill.example_negative in block


def test_mismatched_control_uses_another_category(bench):
    for task in bench.tasks:
        mis = render(bench, task, "mismatched")
        own = bench.skill_of(task)
        assert own.name not in mis.skill_block.splitlines()[0]
        assert f"({own.category})" not in mis.skill_block.splitlines()[0]
        assert mis.hash == render(bench, task, "mismatched").hash  # deterministic


def test_prompt_hash_is_stable_and_content_sensitive(bench):
    task = bench.tasks[0]
    assert render(bench, task, "curated").hash == render(bench, task, "curated").hash
    other = bench.tasks[1]
    assert render(bench, task, "baseline").hash != render(bench, other, "baseline").hash


def test_condition_registry():
    assert {"baseline", "curated", "mismatched"} <= set(CONDITIONS)
    assert condition_names("baseline,curated") == ["baseline", "curated"]
    with pytest.raises(ValueError, match="unknown condition.*'oracle'.*known: baseline, curated"):
        condition_names("baseline,oracle")
