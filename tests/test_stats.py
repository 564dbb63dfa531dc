"""Statistics against independent computations, the study's published numbers, and reports."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from harness.importer import ImportError_, import_skillmix
from harness.pairing import PathMismatch
from harness.report import effect_sentences
from harness.stats.across import cross_model, sft_decomposition
from harness.stats.job import compute, run_stats
from harness.stats.paired import bonferroni, bootstrap_indices, delta_ci, holm, mcnemar, model_stats, paired_outcomes
from harness.stats.per_skill import per_skill, spearman_delta_vs_baseline
from harness.stats.seeds import seed_summary

SKILLMIX = Path(__file__).resolve().parents[2] / "shared" / "reference" / "skillmix"
needs_shared = pytest.mark.skipif(not (SKILLMIX / "verdicts" / "v1_9-llm-only.txt").is_file(),
                                  reason="../shared/reference/skillmix not present")


def verdict_frame(label, bl, cu, *, skills=None, adapter=None, base="base", backend="vllm", judge="j",
                  max_tokens=64):
    """Verdict rows for tasks t0..tn-1; None in bl/cu means unscored."""
    rows = []
    for i, (b, c) in enumerate(zip(bl, cu, strict=True)):
        for condition, passed in (("baseline", b), ("curated", c)):
            rows.append({"cell_id": f"{label}-{i}-{condition}", "model_label": label, "task_uid": f"t{i:03d}",
                         "skill": (skills[i] if skills else f"s{i % 4}"), "condition": condition,
                         "passed": passed, "judge_label": judge, "base_model": base, "adapter_hash": adapter,
                         "backend": backend, "temperature": 0.0, "max_tokens": max_tokens,
                         "repetition_penalty": 1.05})
    return pl.DataFrame(rows, schema_overrides={"passed": pl.Boolean, "adapter_hash": pl.Utf8})


# ------------------------------------------------------------------ McNemar

def test_mcnemar_exact_matches_scipy_binomial():
    m = mcnemar(50, 3, 12, 5)
    assert m.method == "exact" and m.p == pytest.approx(sps.binomtest(3, 15, 0.5).pvalue)


def test_mcnemar_chi2_with_continuity_correction_hand_worked():
    m = mcnemar(153, 10, 30, 7)  # b + c = 40 ≥ 25
    assert m.method == "chi2-cc" and m.statistic == pytest.approx(361 / 40)
    assert m.p == pytest.approx(sps.chi2.sf(9.025, 1))


def test_mcnemar_no_discordant_pairs():
    m = mcnemar(40, 0, 0, 10)
    assert (m.statistic, m.p, m.method) == (0.0, 1.0, "exact")


# ------------------------------------------------------------------ bootstrap

def test_delta_ci_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    bl, cu = rng.random(60) < 0.6, rng.random(60) < 0.75
    bl, cu = bl.astype(float), cu.astype(float)
    idx = bootstrap_indices(60, 2000, seed=11)
    loop = [cu[row].mean() - bl[row].mean() for row in idx]
    assert delta_ci(bl, cu, 2000, seed=11) == pytest.approx(list(np.percentile(loop, [2.5, 97.5])))


def test_all_pass_has_zero_delta_and_degenerate_ci():
    paired = paired_outcomes(verdict_frame("m", [True] * 20, [True] * 20), "m")
    s = model_stats(paired, n_boot=500)
    assert s["delta"] == 0 and s["delta_ci95"] == [0.0, 0.0] and s["mcnemar"]["p"] == 1.0


# ------------------------------------------------------------------ multiplicity

def test_bonferroni_and_holm_hand_worked():
    p = {"a": 0.01, "b": 0.04, "c": 0.03}
    assert bonferroni(p) == pytest.approx({"a": 0.03, "b": 0.12, "c": 0.09})
    assert holm(p) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


# ------------------------------------------------------------------ pairing edge cases

def test_unscored_are_excluded_and_counted_never_failed():
    frame = verdict_frame("m", [True, None, False, True], [True, True, None, True])
    with pytest.warns(UserWarning, match="2 task\\(s\\) lack a scored verdict"):
        paired = paired_outcomes(frame, "m")
    assert paired.unscored_excluded == 2 and paired.dropped_tasks == 2
    assert paired.tasks["task_uid"].to_list() == ["t000", "t003"]
    s = model_stats(paired, n_boot=200)
    assert s["baseline"]["passed"] == 2 and s["n"] == 2  # not 1/4 as "unscored = fail" would give


def test_missing_condition_is_dropped_with_a_warning():
    frame = verdict_frame("m", [True, False, True], [False, True, True])
    frame = frame.filter(~((pl.col("task_uid") == "t001") & (pl.col("condition") == "curated")))
    with pytest.warns(UserWarning, match="1 task"):
        paired = paired_outcomes(frame, "m")
    assert paired.dropped_tasks == 1 and len(paired.tasks) == 2


def test_two_verdicts_for_one_cell_are_refused():
    frame = pl.concat([verdict_frame("m", [True], [True]), verdict_frame("m", [False], [True], judge="k")])
    with pytest.raises(ValueError, match="several verdicts for one task"):
        paired_outcomes(frame, "m")


# ------------------------------------------------------------------ across models

def test_cross_model_bootstrap():
    a = paired_outcomes(verdict_frame("a", [False] * 40 + [True] * 60, [True] * 100), "a")
    b = paired_outcomes(verdict_frame("b", [True] * 100, [True] * 100), "b")
    strong = cross_model(a, b, n_boot=2000)
    assert strong["difference"] == pytest.approx(0.4) and strong["p_one_sided"] < 0.001
    assert strong["ci95"][0] > 0.25
    same = cross_model(a, a, paired_by_task=True, n_boot=2000)
    assert same["difference"] == 0 and same["p_one_sided"] == 1.0 and same["n_shared_tasks"] == 100


def test_sft_decomposition_hand_worked():
    pre = paired_outcomes(verdict_frame("pre", [True] * 6 + [False] * 4, [True] * 5 + [False] * 5), "pre")
    post = paired_outcomes(verdict_frame("post", [True] * 7 + [False] * 3, [True] * 9 + [False] * 1), "post")
    d = sft_decomposition(pre, post, n_boot=500)
    assert d["pre_delta"] == pytest.approx(-0.1) and d["post_delta"] == pytest.approx(0.2)
    assert d["delta_bl"] == pytest.approx(0.1) and d["delta_cu"] == pytest.approx(0.4)
    assert d["delta_lift"] == pytest.approx(0.3)
    assert d["delta_lift_ci95"][0] <= 0.3 <= d["delta_lift_ci95"][1]


def test_compute_pairs_pre_and_post_and_refuses_path_mismatch():
    pre = verdict_frame("base", [True] * 6 + [False] * 4, [True] * 5 + [False] * 5)
    post = verdict_frame("base+lora", [True] * 7 + [False] * 3, [True] * 9 + [False] * 1, adapter="h1")
    result = compute(pl.concat([pre, post]), "j", n_boot=300)
    assert result.decomposition["base+lora vs base"]["pre"] == "base"
    assert result.models["base"]["stage"] == "pre" and result.models["base+lora"]["stage"] == "post"
    assert set(result.models["base"]) >= {"p_holm", "p_bonferroni"}
    other_path = verdict_frame("base+lora", [True] * 7 + [False] * 3, [True] * 9 + [False] * 1, adapter="h1",
                               max_tokens=1024)
    # The mismatched pair alone is refused, with the reason; the rest of the statistics stand.
    mixed = compute(pl.concat([pre, other_path]), "j", n_boot=100)
    assert mixed.decomposition == {} and set(mixed.models) == {"base", "base+lora"}
    refused = mixed.refused["base+lora vs base"]
    assert (refused["post"], refused["pre"]) == ("base+lora", "base") and "max_tokens: [1024, 64]" in refused["reason"]
    forced = compute(pl.concat([pre, other_path]), "j", n_boot=100, allow_path_mismatch=True)
    assert forced.decomposition and not forced.refused
    # One model's episodes from two paths is no comparison to leave out: it is refused outright.
    with pytest.raises(PathMismatch, match="max_tokens"):
        compute(pl.concat([pre, verdict_frame("base", [True], [False], max_tokens=1024)]), "j", n_boot=100)


def test_the_report_renders_a_path_mismatched_sweep_and_says_which_pair_it_left_out(tmp_path):
    from harness.report import render_report

    run = tmp_path / "run"
    run.mkdir()
    pre = verdict_frame("base", [True] * 6 + [False] * 4, [True] * 5 + [False] * 5)
    post = verdict_frame("base+lora", [True] * 7 + [False] * 3, [True] * 9 + [False] * 1, adapter="h1",
                         max_tokens=1024)
    (pl.concat([pre, post]).with_columns(pl.lit(None, pl.Utf8).alias("unscored_reason"))
     .write_parquet(run / "verdicts.parquet"))
    render_report(str(run), n_boot=100)
    report = (run / "report.md").read_text()
    assert "## SFT contribution not computed" in report and "## SFT contribution (cf. Table 1)" not in report
    assert "base+lora vs base: no SFT decomposition, the generation paths differ" in report
    stats = json.loads((run / "stats.json").read_text())
    assert stats["decomposition"] == {}
    assert "max_tokens" in stats["refused_decomposition"]["base+lora vs base"]["reason"]
    assert stats["models"]["base+lora"]["n"] == 10  # the per-model statistics are all there


def test_decomposition_pairs_a_post_sft_model_with_every_pre_sft_model_of_its_base():
    """Two pre-SFT models on one base (a re-run, another seed): one decomposition each, none overwritten."""
    pre = verdict_frame("base", [True] * 6 + [False] * 4, [True] * 5 + [False] * 5)
    rerun = verdict_frame("base-rerun", [True] * 3 + [False] * 7, [True] * 8 + [False] * 2)
    post = verdict_frame("base+lora", [True] * 7 + [False] * 3, [True] * 9 + [False] * 1, adapter="h1")
    result = compute(pl.concat([pre, rerun, post]), "j", n_boot=200)
    pairs = {(d["post"], d["pre"]): d for d in result.decomposition.values()}
    assert set(pairs) == {("base+lora", "base"), ("base+lora", "base-rerun")}
    assert pairs["base+lora", "base"]["pre_delta"] == pytest.approx(-0.1)
    assert pairs["base+lora", "base-rerun"]["pre_delta"] == pytest.approx(0.5)
    said = " ".join(effect_sentences(result))
    assert "base+lora vs base:" in said and "base+lora vs base-rerun:" in said


def _verdict_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (verdict_frame("m", [True] * 12 + [False] * 8, [True] * 16 + [False] * 4)
     .with_columns(pl.lit(None, pl.Utf8).alias("unscored_reason")).write_parquet(run / "verdicts.parquet"))
    return run


def test_report_uses_and_records_the_bootstrap_count(tmp_path):
    from harness.report import render_report

    run = _verdict_run(tmp_path)
    render_report(str(run), n_boot=150, seed=4)
    stats = json.loads((run / "stats.json").read_text())
    assert stats["bootstrap"] == {"resamples": 150, "seed": 4}
    expected = compute(pl.read_parquet(run / "verdicts.parquet"), "j", n_boot=150, seed=4)
    assert stats["models"]["m"]["delta_ci95"] == expected.models["m"]["delta_ci95"]
    assert list(stats) == list(expected.as_dict()) == ["judge", "bootstrap", "models", "decomposition",
                                                       "refused_decomposition", "trajectory", "cross_model",
                                                       "per_skill", "seeds", "single_seed_models"]
    assert "150 task resamples" in (run / "report.md").read_text()


def test_sweep_statistics_bootstrap_reaches_the_report(tmp_path):
    """`statistics.bootstrap` of a sweep config is the count the sweep's report resamples."""
    from jobs.sweep import render_sweep_report
    from jobs.sweep_config import StatsSpec

    run = _verdict_run(tmp_path)
    render_sweep_report(run, StatsSpec(bootstrap=120))
    assert json.loads((run / "stats.json").read_text())["bootstrap"]["resamples"] == 120


# ------------------------------------------------------------------ per skill and seeds

def test_per_skill_clusters_and_spearman_match_scipy():
    skills = [f"s{i // 5}" for i in range(40)]
    bl = [i % 5 < (i // 5) % 5 + 1 for i in range(40)]
    cu = [True] * 40
    paired = paired_outcomes(verdict_frame("m", bl, cu, skills=skills), "m")
    table = per_skill(paired)
    assert set(table["cluster"]) <= {"lift", "flat"} and "lift" in set(table["cluster"])
    rho = spearman_delta_vs_baseline(table)
    expected = sps.spearmanr(table["baseline"].to_numpy(), table["delta"].to_numpy()).statistic
    assert rho["rho"] == pytest.approx(expected) and rho["n"] == 8
    non_ceiling = spearman_delta_vs_baseline(table, non_ceiling=True)
    assert non_ceiling["n"] == (table["baseline"] < 1).sum()


def test_seed_summary_spread_and_pooled_test():
    s1 = paired_outcomes(verdict_frame("v@s1", [True] * 5 + [False] * 5, [True] * 8 + [False] * 2), "v@s1")
    s2 = paired_outcomes(verdict_frame("v@s2", [True] * 6 + [False] * 4, [True] * 7 + [False] * 3), "v@s2")
    summary = seed_summary({"v@s1": s1, "v@s2": s2}, n_boot=500)
    assert summary["delta_mean"] == pytest.approx(0.2) and summary["delta_sd"] == pytest.approx(np.std([0.3, 0.1], ddof=1))
    pooled = summary["pooled_mcnemar"]
    assert (pooled["a"], pooled["b"], pooled["c"], pooled["d"]) == (11, 0, 4, 5)
    result = compute(pl.concat([verdict_frame("v@s1", [True] * 5 + [False] * 5, [True] * 8 + [False] * 2),
                                verdict_frame("v@s2", [True] * 6 + [False] * 4, [True] * 7 + [False] * 3)]),
                     "j", n_boot=200)
    assert list(result.seeds) == ["v"] and result.single_seed_models == []


# ------------------------------------------------------------------ the study's numbers

def _episodes_json(name: str, tmp: Path) -> Path:
    rows = [line.split() for line in (SKILLMIX / "verdicts" / f"{name}.txt").read_text().splitlines() if line.strip()]
    records = [{"task_uid": uid, "model": "Qwen/Qwen3.5-2B+lora:qwen35-2b-skill-lora-v1.9", "condition": cond,
                "skill_name": "", "response": "", "passed": passed == "1", "score": float(score)}
               for _, uid, cond, passed, score in rows]
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.slow
@needs_shared
def test_study_v1_9_llm_only_reproduced(tmp_path):
    out = tmp_path / "v19"
    for name, label in (("v1_9-llm-only", "opus"), ("v1_9-gpt", "gpt")):
        import_skillmix(_episodes_json(name, tmp_path), str(out), model_label="v1.9", judge_label=label,
                        mode="llm-only", tasks_json=SKILLMIX / "tasks_eval.json", size="2B")
    assert len(pl.read_parquet(out / "episodes.parquet")) == 400  # two verdict sets, one set of episodes
    m = run_stats(str(out), "opus").models["v1.9"]
    assert (m["n"], m["baseline"]["passed"], m["curated"]["passed"]) == (200, 163, 183)
    assert m["baseline"]["rate"] == pytest.approx(0.815) and m["curated"]["rate"] == pytest.approx(0.915)
    assert m["delta"] == pytest.approx(0.100)
    mc = m["mcnemar"]
    assert (mc["a"], mc["b"], mc["c"], mc["d"]) == (153, 10, 30, 7) and mc["method"] == "chi2-cc"
    assert mc["statistic"] == pytest.approx(9.025) and round(mc["p"], 4) == 0.0027
    assert m["delta_ci95"][0] == pytest.approx(0.040, abs=0.01) and m["delta_ci95"][1] == pytest.approx(0.160, abs=0.01)
    cli = subprocess.run([sys.executable, "-m", "harness.cli", "stats", str(out), "--judge-label", "opus", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(cli)["models"]["v1.9"]["mcnemar"]["b"] == 10
    agree = subprocess.run([sys.executable, "-m", "harness.cli", "agreement", str(out), "--judge-a", "opus",
                            "--judge-b", "gpt", "--json"], capture_output=True, text=True, check=True).stdout
    a = json.loads(agree)["models"]["v1.9"]
    assert a["kappa"] == 1.0 and a["agreement"] == 1.0 and a["n"] == 400
    rendered = json.loads(subprocess.run([sys.executable, "-m", "harness.cli", "report", str(out), "--judge-label", "opus"],
                                         capture_output=True, text=True, check=True).stdout)
    page = Path(rendered["report_html"]).read_text()
    assert "<table>" in page and page.count("data:image/png;base64,") == len(rendered["plots"]) >= 4
    assert "0.815" in page and "[+0.040, +0.160]" in page
    md = (out / "report.md").read_text()
    assert "Judge agreement: opus vs gpt" in md and all((out / p).is_file() for p in rendered["plots"])


def test_importer_errors_name_the_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"task_uid": "t1", "condition": "baseline", "passed": True},
                               {"task_uid": "t2", "condition": "oracle", "passed": True}]))
    with pytest.raises(ImportError_, match=r"record #1 \(t2\), field 'condition': 'oracle'"):
        import_skillmix(bad, str(tmp_path / "r"), model_label="m", judge_label="j", mode="llm-only")
    bad.write_text(json.dumps([{"task_uid": "t1", "condition": "baseline"}]))
    with pytest.raises(ImportError_, match=r"record #0 \(t1\): field 'passed' missing"):
        import_skillmix(bad, str(tmp_path / "r"), model_label="m", judge_label="j", mode="llm-only")


def test_report_from_a_harness_run(server, tmp_path):
    from harness.client import Sampling
    from harness.generation_job import GenerateRequest, run_generation
    from harness.judging.job import JudgeRequest, run_judging
    from harness.report import render_report

    run = tmp_path / "harness-run"
    run_generation(GenerateRequest(run=str(run), model="tiny", url=server.base_url, split="all",
                                   sampling=Sampling(max_tokens=8)))
    run_judging(JudgeRequest(run=str(run), mode="llm-only", judge_model="hosted_vllm/tiny", api_base=server.api_base,
                             label="tiny-judge"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rendered = render_report(str(run))
    page = Path(rendered["report_html"]).read_text()
    assert "tiny" in page and "<table>" in page and "data:image/png;base64," in page
    stats = json.loads((run / "stats.json").read_text())
    assert stats["models"]["tiny"]["n"] + stats["models"]["tiny"]["dropped_tasks"] == 48
