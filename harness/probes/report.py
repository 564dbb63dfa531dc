"""The probe table for a report (the study's Table 8): rates per model, adapters against base."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from harness.probes.job import COLUMNS

TITLES = {"format_locked": "format-locked", "factual_hit": "factual hit", "confabulated": "trick confab",
          "phantom_skill_block": "phantom skill block"}


def _cell(row: dict | None) -> str:
    if row is None or not row["n"]:
        return "—" if row is None else f"unscored ({row['unscored']})"
    text = f"{row['positives']}/{row['n']} ({row['rate']:.2f})"
    if row["p"] is not None:
        text += f"; vs base b={row['b']} c={row['c']}, p={row['p']:.3g}"
    return text


def probe_table(folder: str | Path) -> tuple[str, list[str], list[list[str]], str] | None:
    """(title, header, rows, caption) from ``probe_table.parquet`` in ``folder`` or ``folder/probes``;
    None when there is none."""
    folder = Path(folder)
    file = next((f for f in (folder / "probe_table.parquet", folder / "probes" / "probe_table.parquet")
                 if f.is_file()), None)
    if file is None:
        return None
    table = pl.read_parquet(file)
    by = {(r["model_label"], r["column"]): r for r in table.iter_rows(named=True)}
    models = list(dict.fromkeys(table["model_label"].to_list()))
    rows = [[m] + [_cell(by.get((m, c))) for c in COLUMNS] for m in models]
    caption = ("Generality probe under a generic system prompt (cf. the study's Table 8): count/n (rate) per "
               "column; adapters against their base by McNemar over probes scored for both (b: flagged for the "
               "base only, c: for the adapter only). Format-locking and phantom skill-block mentions by rule, "
               "factual hits by rule (short answers) or the LLM judge, trick confabulation by the LLM judge.")
    return "Generality probe (cf. Table 8)", ["model"] + [TITLES[c] for c in COLUMNS], rows, caption
