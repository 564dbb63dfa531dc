"""Refusing comparisons across generation paths: the study's costliest mistake.

Two sets of episodes may be paired (baseline vs curated, pre- vs post-SFT) only when they
were generated on the same path: backend, engine dtype, sampling parameters and max tokens.
"""

from __future__ import annotations

import polars as pl

from harness.errors import SkillsweepError

PATH_COLUMNS = ("backend", "dtype", "temperature", "max_tokens", "repetition_penalty")


class PathMismatch(SkillsweepError, ValueError):
    pass


def path_of(frame: pl.DataFrame) -> dict[str, list]:
    """The values of each generation-path column in a frame (backend, dtype, sampling)."""
    return {c: sorted(frame.get_column(c).unique().to_list(), key=str) for c in PATH_COLUMNS if c in frame.columns}


def assert_matched_path(*frames: pl.DataFrame, allow_mismatch: bool = False) -> None:
    """Raise :class:`PathMismatch` naming the fields whose values differ across ``frames``
    (or within one frame); ``allow_mismatch`` turns the check off, deliberately."""
    if allow_mismatch:
        return
    combined = pl.concat([f.select([c for c in PATH_COLUMNS if c in f.columns]) for f in frames],
                         how="diagonal_relaxed")
    differing = {c: v for c, v in path_of(combined).items() if len(v) > 1}
    if differing:
        detail = "; ".join(f"{c}: {v}" for c, v in differing.items())
        raise PathMismatch(f"episodes come from different generation paths ({detail}); "
                           "pass allow_mismatch / --allow-path-mismatch to compare them anyway")
