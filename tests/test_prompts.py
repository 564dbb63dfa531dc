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


@pytest.mark.parametrize("condition,k", [("routing", 3), ("routing-k5", 5), ("routing-k2-s7", 2)])
def test_routing_shows_own_block_once_among_other_categories(bench, condition, k):
    from harness.prompts import ROUTING_HEADER

    condition_names([condition])
    orders = set()
    for task in bench.tasks:
        prompt = render(bench, task, condition)
        own = bench.skill_of(task)
        system = prompt.messages[0]["content"]
        assert prompt.messages[1] == render(bench, task, "baseline").messages[1]
        assert system == SOLVER_PROMPT + "\n\n" + prompt.skill_block
        assert prompt.skill_block.startswith(ROUTING_HEADER)
        headers = [line for line in prompt.skill_block.splitlines() if line.startswith("## Skill: ")]
        assert len(headers) == k
        assert system.count(skill_block(own)) == 1
        assert headers.count(f"## Skill: {own.name} ({own.category})") == 1
        others = [h for h in headers if h != f"## Skill: {own.name} ({own.category})"]
        assert len(others) == k - 1 and all(f"({own.category})" not in h for h in others)
        assert len(set(headers)) == k
        assert prompt.hash == render(bench, task, condition).hash  # deterministic per seed
        orders.add(headers.index(f"## Skill: {own.name} ({own.category})"))
    assert len(orders) > 1  # the own block is not always in the same place


def test_routing_seed_changes_the_draw_and_k_is_checked(bench):
    condition_names("routing-k3-s1,routing-k3-s2")
    differing = [t for t in bench.tasks
                 if render(bench, t, "routing-k3-s1").hash != render(bench, t, "routing-k3-s2").hash]
    assert differing
    with pytest.raises(ValueError, match=r"routing k=8 on bench 'builtin'.*needs 7"):
        condition_names("routing-k8")
        render(bench, bench.tasks[0], "routing-k8")
    with pytest.raises(ValueError, match="k >= 2"):
        condition_names("routing-k1")
