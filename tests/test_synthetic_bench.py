"""The synthetic bench of the study's shape: counts, query-type mix, prompt lengths, determinism."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness.bench import load_bench
from jobs.estimate import mean_prompt_tokens
from jobs.synthetic_bench import write_paper_shaped_bench

SKILLMIX = Path(__file__).resolve().parents[2] / "shared" / "reference" / "skillmix"


def test_paper_shaped_bench_loads_with_the_studys_counts(tmp_path):
    folder = write_paper_shaped_bench(tmp_path / "bench")
    bench = load_bench(folder)
    tasks = bench.split("eval")
    assert len(bench.skills) == 40 and len(tasks) == len(bench.tasks) == 200
    assert Counter(t.query_type.value for t in tasks) == {"YES_NO": 122, "FREE_FORM": 33, "SINGLE_WORD": 23,
                                                          "RANKING": 22}
    assert set(Counter(t.skill for t in tasks).values()) == {5}  # 5 tasks a skill
    assert Counter(s.category for s in bench.skills.values())["rhetorical"] == 14
    # The study's prompt lengths (202 / 745 tokens by the engine's rule), within 5 %.
    assert mean_prompt_tokens(bench, "eval", ["baseline"]) == pytest.approx(202, rel=0.05)
    assert mean_prompt_tokens(bench, "eval", ["curated"]) == pytest.approx(745, rel=0.05)


def test_paper_shaped_bench_is_deterministic_and_sized_by_its_arguments(tmp_path):
    a = write_paper_shaped_bench(tmp_path / "a")
    b = write_paper_shaped_bench(tmp_path / "b")
    for name in ("skills.jsonl", "tasks.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    other = load_bench(write_paper_shaped_bench(tmp_path / "c", seed=1))
    assert other.content_hash() != load_bench(a).content_hash()
    small = load_bench(write_paper_shaped_bench(tmp_path / "small", tasks=12, skills=4))
    assert len(small.skills) == 4 and len(small.split("eval")) == 12
    with pytest.raises(ValueError, match="a task per skill"):
        write_paper_shaped_bench(tmp_path / "bad", tasks=3, skills=4)


@pytest.mark.skipif(not (SKILLMIX / "tasks_eval.json").is_file(), reason="the study's files are not here")
def test_paper_shaped_prompts_match_the_studys_within_five_percent(tmp_path):
    study = load_bench(SKILLMIX)
    synthetic = load_bench(write_paper_shaped_bench(tmp_path / "bench"))
    both = ["baseline", "curated"]
    assert mean_prompt_tokens(synthetic, "eval", both) == pytest.approx(mean_prompt_tokens(study, "eval", both),
                                                                         rel=0.05)
