"""``skillsweep report``: tables in the spirit of the study's Tables 1, 2, 4 and 7, and plots.

Writes ``report.md`` (PNG files beside it) and ``report.html`` (the same, with the images
embedded and the run browser of :mod:`harness.browser` below, so one file can be sent around).
Statistics come from :mod:`harness.stats.job`. The findings section says in words what the
numbers say, including when an effect is null, how many verdicts are unscored and why, and
how many response pairs are byte-identical (pairs that cannot differ in verdict).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import polars as pl

from harness.browser.data import build_payload
from harness.browser.page import view_fragment
from harness.judging.agreement import agreement
from harness.judging.job import reason_class
from harness.probes.report import probe_table
from harness.runstore import run_dir
from harness.stats.job import StatsSummary, choose_judge, compute, load_verdicts, models_meta
from harness.stats.paired import N_BOOT

# matplotlib is imported where the plots are drawn: about a second, which only a report needs.


def _f(v, signed=False, digits=3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return str(v)


def _ci(ci) -> str:
    return "—" if not ci or ci[0] is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _p(p) -> str:
    return "—" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.4f}")


def _plots(stats: StatsSummary, out: Path, agree: dict | None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    models = stats.models
    # Pre-SFT Δ across sizes, with post-SFT points.
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    # A model with no scored pair has no Δ (None): it has no point to plot; the table says "—".
    pre = [(m.get("size") or m.get("base_model") or l, m["delta"], l) for l, m in models.items()
           if m["stage"] == "pre" and m["delta"] is not None]
    post = [(m.get("size") or m.get("base_model") or l, m["delta"], l) for l, m in models.items()
            if m["stage"] == "post" and m["delta"] is not None]
    xs = sorted({x for x, _, _ in pre + post}, key=str)
    pos = {x: i for i, x in enumerate(xs)}
    if pre:
        pts = sorted(pre, key=lambda t: pos[t[0]])
        ax.plot([pos[x] for x, _, _ in pts], [d for _, d, _ in pts], "o-", label="pre-SFT")
    if post:
        # Offset each post-SFT point to the right of its size so none hides the pre-SFT point.
        seen: dict = {}
        xy = []
        for x, d, l in post:
            seen[x] = seen.get(x, 0) + 1
            xy.append((pos[x] + 0.12 * seen[x], d, l))
        ax.plot([x for x, _, _ in xy], [d for _, d, _ in xy], "s", color="tab:red", label="post-SFT")
        for x, d, l in xy:
            ax.annotate(l, (x, d), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=8)
    ax.set_xlim(-0.5, len(xs) - 0.2)
    ax.set_ylabel("Δ = curated − baseline")
    ax.set_title("Procedural Δ by model (pre-SFT trajectory, post-SFT points)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "trajectory.png", dpi=110)
    plt.close(fig)
    files.append(("trajectory.png", "Δ trajectory"))
    for label, skills in stats.per_skill.items():
        frame = pl.DataFrame(skills["skills"])
        if frame.is_empty():
            continue
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.18 * len(frame) + 1)))
        colors = ["tab:green" if c == "lift" else "tab:red" if c == "regression" else "tab:grey" for c in frame["cluster"]]
        ax.barh(frame["skill"].cast(pl.Utf8).fill_null("?").to_list(), frame["delta"].to_list(), color=colors)
        # A Δ of 0 draws no bar; the marker shows every skill's value anyway.
        ax.scatter(frame["delta"].to_list(), range(len(frame)), c=colors, s=14, zorder=3, edgecolors="black",
                   linewidths=0.4)
        # Bars stick to x = 0; pad the axis so a marker at 0 (or at an extreme) is not cut.
        values = [d for d in frame["delta"].to_list() if d is not None] + [0.0]
        pad = max(0.05, 0.08 * (max(values) - min(values)))
        ax.set_xlim(min(values) - pad, max(values) + pad)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=6)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("Δ per skill")
        ax.set_title(f"{label}: per-skill Δ (green lift, grey flat, red regression)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"skills_{safe}.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        # Skills often share a (baseline, Δ) point; size and a count show how many.
        points = frame.group_by("baseline", "delta").len()
        ax.scatter(points["baseline"].to_list(), points["delta"].to_list(), s=[20 + 15 * k for k in points["len"]],
                   alpha=0.7)
        for x, y, k in points.iter_rows():
            if k > 1:
                ax.annotate(f"×{k}", (x, y), textcoords="offset points", xytext=(6, 3), fontsize=7)
        rho = skills["spearman_all"]["rho"]
        ax.set_xlabel("per-skill baseline pass rate")
        ax.set_ylabel("per-skill Δ")
        ax.set_title(f"{label}: Δ vs baseline (Spearman ρ = {_f(rho, True)})", fontsize=9)
        ax.axhline(0, color="grey", lw=0.8)
        fig.tight_layout()
        fig.savefig(out / f"scatter_{safe}.png", dpi=110)
        plt.close(fig)
        files += [(f"skills_{safe}.png", f"{label}: per-skill Δ"), (f"scatter_{safe}.png", f"{label}: Δ vs baseline")]
    if agree:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels = list(agree["models"])
        ax.bar(range(len(labels)), [agree["models"][l]["kappa"] or 0 for l in labels], color="tab:blue", label="κ")
        ax.plot(range(len(labels)), [agree["models"][l]["agreement"] or 0 for l in labels], "o", color="tab:orange",
                label="raw agreement")
        for i, l in enumerate(labels):  # a κ of 0 (or none) draws no bar: say its value
            ax.annotate(_f(agree["models"][l]["kappa"], digits=2), (i, agree["models"][l]["kappa"] or 0),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Judge agreement: {agree['judge_a']} vs {agree['judge_b']}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "agreement.png", dpi=110)
        plt.close(fig)
        files.append(("agreement.png", "judge agreement"))
    return files


def _tables(stats: StatsSummary, agree: dict | None) -> list[tuple[str, list[str], list[list[str]], str]]:
    models = stats.models
    t2 = [[l, _f(m["baseline"]["rate"]), _f(m["curated"]["rate"]), _f(m["delta"], True),
           f"{m['mcnemar']['method']} {_f(m['mcnemar']['statistic'])}, p={_p(m['mcnemar']['p'])}",
           _p(m.get("p_holm")), _ci(m["delta_ci95"]), str(m["n"]), str(m["unscored_excluded"])]
          for l, m in models.items()]
    tables = [("Pass rates and paired tests (cf. the study's Table 2)",
               ["model", "BL", "CU", "Δ", "McNemar", "p (Holm)", "bootstrap 95% CI on Δ", "n", "unscored"], t2,
               "Δ = CU − BL on tasks scored in both conditions; unscored verdicts are excluded and counted.")]
    if stats.decomposition:
        t1 = [[d["post"], d["pre"], _f(d["pre_delta"], True), _f(d["post_delta"], True),
               f"{_f(d['delta_bl'], True)} {_ci(d['delta_bl_ci95'])}", f"{_f(d['delta_cu'], True)} {_ci(d['delta_cu_ci95'])}",
               f"{_f(d['delta_lift'], True)} {_ci(d['delta_lift_ci95'])}"] for d in stats.decomposition.values()]
        tables.append(("SFT contribution (cf. Table 1)", ["post-SFT", "pre-SFT", "pre Δ", "post Δ", "ΔBL", "ΔCU", "Δ-lift"],
                       t1, "Matched generation path required; CIs from one task resample shared by all three."))
    if stats.refused:
        tr = [[d["post"], d["pre"], d["reason"]] for d in stats.refused.values()]
        tables.append(("SFT contribution not computed", ["post-SFT", "pre-SFT", "why"], tr,
                       "These pairs' episodes come from different generation paths, so a difference between them "
                       "mixes the training with the path; `skillsweep report RUN --allow-path-mismatch` computes "
                       "them anyway."))
    t7 = [[pair, f"{_f(c['independent']['difference'], True)} {_ci(c['independent']['ci95'])}",
           _p(c["independent"]["p_one_sided"]),
           f"{_f(c['paired_by_task']['difference'], True)} {_ci(c['paired_by_task']['ci95'])}",
           _p(c["paired_by_task"]["p_one_sided"])] for pair, c in stats.cross_model.items()]
    if t7:
        tables.append(("Cross-model tests of Δ_A > Δ_B (cf. Table 7)",
                       ["A vs B", "Δ_A − Δ_B (independent)", "p one-sided", "Δ_A − Δ_B (paired by task)", "p one-sided"],
                       t7, "Independent resampling is the study's test; the paired-by-task variant uses shared tasks."))
    if agree:
        t4 = [[l, str(m["n"]), _f(m["agreement"]), _f(m["kappa"]), _f(m["kappa_baseline"]), _f(m["kappa_curated"]),
               _f(m["delta_a"], True), _f(m["delta_b"], True), _f(m["delta_shift"], True)]
              for l, m in agree["models"].items()]
        tables.append((f"Judge agreement: {agree['judge_a']} vs {agree['judge_b']} (cf. Table 4)",
                       ["model", "n", "agreement", "κ", "κ BL", "κ CU", "Δ A", "Δ B", "shift B−A"], t4,
                       "κ pooled over both conditions; episodes either judge left unscored are excluded."))
    if stats.seeds:
        ts = [[g, ", ".join(s["seeds"]), _f(s["delta_mean"], True), _f(s["delta_sd"]), _ci(s["mean_delta_ci95"]),
               f"{s['pooled_mcnemar']['method']} p={_p(s['pooled_mcnemar']['p'])}"] for g, s in stats.seeds.items()]
        tables.append(("Across seeds", ["model", "seeds", "mean Δ", "sd", "95% CI of mean Δ", "pooled McNemar"], ts, ""))
    return tables


def effect_sentences(stats: StatsSummary) -> list[str]:
    """Each model's Δ in words, with its CI and n; a CI containing 0 is called a null effect."""
    out = []
    for label, m in stats.models.items():
        n, ci = m["n"], m["delta_ci95"]
        if not n or not ci or ci[0] is None:
            out.append(f"{label}: no task has a scored verdict in both conditions, so Δ cannot be estimated "
                       f"({m['unscored_excluded']} verdicts unscored, {m.get('dropped_tasks', 0)} tasks dropped).")
            continue
        mc = m["mcnemar"]
        tail = f"Δ = {m['delta']:+.3f}, 95% CI {_ci(ci)}, n = {n} paired tasks, McNemar p = {_p(mc['p'])}"
        if ci[0] <= 0 <= ci[1]:
            same = (" No task changed outcome between the conditions." if mc.get("b", 0) + mc.get("c", 0) == 0 else "")
            out.append(f"{label}: no detectable effect of the curated skill ({tail}); the CI contains 0.{same}")
        else:
            out.append(f"{label}: the curated skill {'raises' if m['delta'] > 0 else 'lowers'} the pass rate ({tail}).")
    for d in stats.decomposition.values():
        lo, hi = d.get("delta_lift_ci95") or (None, None)
        if lo is None or hi is None:
            continue
        verdict = "no detectable SFT lift" if lo <= 0 <= hi else ("an SFT lift" if d["delta_lift"] > 0 else "an SFT loss")
        out.append(f"{d['post']} vs {d['pre']}: {verdict} (Δ-lift = {d['delta_lift']:+.3f}, 95% CI {_ci((lo, hi))}).")
    for d in stats.refused.values():
        out.append(f"{d['post']} vs {d['pre']}: no SFT decomposition, the generation paths differ ({d['reason']}).")
    return out


def unscored_sentences(verdicts: pl.DataFrame) -> list[str]:
    """Per verdict set: how many verdicts are unscored, grouped by reason, and how many cells
    the extractor handed to the LLM judge."""
    out = []
    for label in sorted(verdicts["judge_label"].unique().to_list()):
        rows = verdicts.filter(pl.col("judge_label") == label)
        unscored = rows.filter(pl.col("passed").is_null())
        reasons = (unscored.select(pl.col("unscored_reason").fill_null("no reason recorded")
                                   .map_elements(reason_class, return_dtype=pl.Utf8).alias("reason"))
                   .group_by("reason").len().sort(["len", "reason"], descending=[True, False]))
        why = "; ".join(f"{k} × {r}" for r, k in reasons.iter_rows())
        line = f"{label}: {len(unscored)} of {len(rows)} verdicts unscored" + (f" ({why})" if why else "")
        if "escalated_from" in rows.columns:
            escalated = rows["escalated_from"].drop_nulls().len()
            if escalated:
                line += f"; {escalated} cells the extractor was unsure of went to the LLM judge"
        out.append(line + ".")
    return out


def identical_pairs(episodes: pl.DataFrame) -> dict:
    """How many baseline/curated pairs (same model, task) and base/adapter pairs (same base,
    task, condition) have byte-identical responses; per model label."""
    columns = ["model_label", "base_model", "adapter_hash", "task_uid", "condition", "response"]
    if not set(columns) <= set(episodes.columns):
        episodes = pl.DataFrame(schema={c: pl.Utf8 for c in columns})
    # Imported runs may carry no response text; empty responses say nothing about sameness.
    rows = (episodes.select(*columns[:-1], pl.col("response").cast(pl.Utf8).alias("text"))
            .filter(pl.col("text").is_not_null() & (pl.col("text") != "")))
    bl = rows.filter(pl.col("condition") == "baseline")
    cu = rows.filter(pl.col("condition") == "curated")
    blcu = bl.join(cu, on=["model_label", "task_uid"], suffix="_cu")
    base = rows.filter(pl.col("adapter_hash").is_null())
    adapted = rows.filter(pl.col("adapter_hash").is_not_null())
    ba = adapted.join(base, on=["base_model", "task_uid", "condition"], suffix="_base")

    def count(frame: pl.DataFrame, other: str) -> dict:
        per = (frame.group_by("model_label").agg(pl.len().alias("pairs"),
                                                 (pl.col("text") == pl.col(other)).sum().alias("identical"))
               .sort("model_label"))
        return {"pairs": int(per["pairs"].sum() or 0), "identical": int(per["identical"].sum() or 0),
                "models": {r["model_label"]: {"pairs": r["pairs"], "identical": r["identical"]}
                           for r in per.iter_rows(named=True)}}

    return {"baseline_curated": count(blcu, "text_cu"), "base_adapter": count(ba, "text_base")}


def identical_sentence(probe: dict) -> str:
    """The report's sentence on byte-identical response pairs, which pull the difference toward 0."""
    def part(name: str, d: dict) -> str:
        if not d["pairs"]:
            return f"{name}: no pairs with responses in this run"
        each = ", ".join(f"{m} {v['identical']}/{v['pairs']}" for m, v in d["models"].items())
        return f"{name}: {d['identical']} of {d['pairs']} pairs byte-identical ({each})"
    return (f"Identical responses: {part('baseline/curated', probe['baseline_curated'])}; "
            f"{part('base/adapter', probe['base_adapter'])}. An identical pair cannot differ in verdict, "
            "so many of them pull Δ toward 0.")


def findings(folder: Path, stats: StatsSummary, verdicts: pl.DataFrame) -> list[str]:
    """The report's findings: effects, unscored cells, identical responses."""
    lines = effect_sentences(stats) + unscored_sentences(verdicts)
    episodes = folder / "episodes.parquet"
    if episodes.is_file():
        lines.append(identical_sentence(identical_pairs(pl.read_parquet(episodes))))
    return lines


def browser_section(folder: Path) -> str:
    """The run browser for report.html; empty for a run without episodes (a bare import)."""
    try:
        return view_fragment(build_payload(folder))
    except FileNotFoundError:
        return ""


def render_report(run: str | Path, judge: str | None = None, judge_b: str | None = None,
                  allow_path_mismatch: bool = False, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``n_boot`` and ``seed``: every bootstrap of the report (a sweep's ``statistics.bootstrap``);
    both are recorded in stats.json and named in the report."""
    folder = run_dir(run)
    verdicts = load_verdicts(folder)
    judge = choose_judge(verdicts, judge)
    stats = compute(verdicts, judge, meta=models_meta(folder), allow_path_mismatch=allow_path_mismatch,
                    n_boot=n_boot, seed=seed)
    others = [l for l in sorted(verdicts["judge_label"].unique().to_list()) if l != judge]
    other = judge_b or (others[0] if others else None)
    agree = agreement(verdicts, judge, other) if other else None
    (folder / "stats.json").write_text(json.dumps(stats.as_dict(), indent=2, default=str))
    images = _plots(stats, folder, agree)
    tables = _tables(stats, agree)
    tables += [t for t in [probe_table(folder)] if t]
    single = stats.single_seed_models
    note = (f"Single-seed models: {', '.join(single)}. Their tests are within-seed only." if single else "")
    boot = f"Bootstrap CIs and tests: {n_boot} task resamples (seed {seed})."
    said = findings(folder, stats, verdicts)
    md = [f"# skillsweep report: {folder.name}", "", f"Judge: **{judge}**" + (f"; agreement vs **{other}**" if other else ""),
          "", boot, "", note, "", "## Findings", ""] + [f"- {line}" for line in said] + [""]
    for title, head, rows, caption in tables:
        md += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md += ["", caption, ""] if caption else [""]
    md += ["## Plots", ""] + [f"![{alt}]({name})" for name, alt in images]
    md += ["", "## Responses", "", f"Browse every cell in report.html, or run `skillsweep view {folder}`."]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    body = [f"<h1>skillsweep report: {html.escape(folder.name)}</h1>",
            f"<p>Judge: <b>{html.escape(judge)}</b>" + (f"; agreement vs <b>{html.escape(other)}</b>" if other else "") + "</p>",
            f"<p>{html.escape(boot)}</p>", f"<p>{html.escape(note)}</p>", "<h2>Findings</h2><ul id='findings'>",
            *(f"<li>{html.escape(line)}</li>" for line in said), "</ul>"]
    for title, head, rows, caption in tables:
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        body.append(f"</table><p class='cap'>{html.escape(caption)}</p>")
    body.append("<h2>Plots</h2>")
    for name, alt in images:
        data = base64.b64encode((folder / name).read_bytes()).decode()
        body.append(f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(alt)}</figcaption></figure>")
    body.append(browser_section(folder))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{border:1px solid #bbb;padding:3px 7px}"
             "th{background:#eee}.cap{font-size:12px;color:#555}img{max-width:100%}")
    (folder / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>skillsweep report"
                                        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return {"report_md": str(folder / "report.md"), "report_html": str(folder / "report.html"),
            "stats_json": str(folder / "stats.json"), "plots": [name for name, _ in images]}
