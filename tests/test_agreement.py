"""Judge agreement: kappa against hand-worked tables, the 2x2 table, Δ shift, and the study's v1.9."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from harness.judging.agreement import agreement, cohen_kappa

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "skillmix" / "verdicts"


def test_cohen_kappa_hand_worked():
    # 2x2: both pass 20, a-only 5, b-only 10, both fail 15; po = .7, pe = .5*.6 + .5*.4 = .5 → κ = .4
    a = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([True, True], [True, True]) == 1.0  # perfect agreement on one class
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)
    assert cohen_kappa([], []) is None


def _frame(label, passed, conditions, skills):
    return pl.DataFrame({"cell_id": [f"c{i}" for i in range(len(passed))], "model_label": "m",
                         "task_uid": [f"t{i // 2}" for i in range(len(passed))], "skill": skills,
                         "condition": conditions, "judge_label": label, "passed": passed})


def test_agreement_table_delta_shift_and_unscored():
    conditions = ["baseline", "curated"] * 4
    skills = ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s4"]
    a = _frame("A", [True, True, False, True, True, False, False, None], conditions, skills)
    b = _frame("B", [True, True, True, True, True, True, False, True], conditions, skills)
    m = agreement(pl.concat([a, b]), "A", "B")["models"]["m"]
    assert m["n"] == 7 and m["unscored_excluded"] == 1  # the unscored verdict is excluded, not a fail
    assert m["confusion"] == {"both_pass": 4, "a_only": 0, "b_only": 2, "both_fail": 1}
    assert m["agreement"] == pytest.approx(5 / 7)
    # A: BL 2/4 pass, CU 2/3; B: BL 3/4, CU 3/3 (over the 7 both scored)
    assert m["delta_a"] == pytest.approx(2 / 3 - 2 / 4)
    assert m["delta_b"] == pytest.approx(1 - 3 / 4)
    assert m["delta_shift"] == pytest.approx(m["delta_b"] - m["delta_a"])
    assert m["disagreements_per_skill"] == {"s2": 1, "s3": 1}
    with pytest.raises(ValueError, match="no verdicts with judge label 'C'"):
        agreement(a, "A", "C")


def _study_verdicts(name: str, label: str) -> pl.DataFrame:
    rows = [line.split() for line in (SHARED / f"{name}.txt").read_text().splitlines() if line.strip()]
    return pl.DataFrame({"cell_id": [f"{r[1]}-{r[2]}" for r in rows], "model_label": "v1.9",
                         "task_uid": [r[1] for r in rows], "skill": "?", "condition": [r[2] for r in rows],
                         "judge_label": label, "passed": [r[3] == "1" for r in rows]})


@pytest.mark.skipif(not (SHARED / "v1_9-gpt.txt").is_file(), reason="../shared/reference/skillmix not present")
def test_study_v1_9_cross_family_agreement(tmp_path):
    verdicts = pl.concat([_study_verdicts("v1_9-llm-only", "opus"), _study_verdicts("v1_9-gpt", "gpt")])
    m = agreement(verdicts, "opus", "gpt")["models"]["v1.9"]
    assert m["n"] == 400 and m["kappa"] == 1.0 and m["agreement"] == 1.0
    assert m["delta_a"] == pytest.approx(0.100) and m["delta_shift"] == 0.0
    # The same through the CLI on a stored run.
    run = tmp_path / "study"
    run.mkdir()
    verdicts.write_parquet(run / "verdicts.parquet")
    out = subprocess.run([sys.executable, "-m", "harness.cli", "agreement", str(run), "--judge-a", "opus",
                          "--judge-b", "gpt", "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["models"]["v1.9"]["kappa"] == 1.0
