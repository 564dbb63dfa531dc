"""A run folder: the episode journal, the episode table, the manifest.

Rows are appended to ``episodes.jsonl`` as they complete (flushed and fsynced), so a crash or
SIGKILL loses at most the row being written; a torn last line is cut on reopen. The parquet
table is always rebuilt from the journal, keeping the first row per cell id, so a resumed run
ends with every cell exactly once.

Several processes may write one run at once (a sweep's driver per server replica): each writes a
shard journal of its own (``episodes.<shard>.jsonl``, :meth:`RunStore.shard`), and the run's own
store folds the shards in when it next opens for the table (:meth:`RunStore.absorb_shards`).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Literal, TextIO

import polars as pl

from harness.errors import SkillsweepError
from harness.schema import EPISODE_TYPES, VERDICT_TYPES, conform

RESULTS_DIR = Path("results")
# Which row of a key a table keeps (RunStore.keep).
Keep = Literal["first", "last"]

# Tables with a schema (harness.schema): written with its column types.
SCHEMAS = {"episodes": EPISODE_TYPES, "verdicts": VERDICT_TYPES}


class RunInUse(SkillsweepError, RuntimeError):
    pass


class RunFileError(SkillsweepError, ValueError):
    """A file in a run folder that cannot be read, and cannot be rebuilt."""


class TableMissing(SkillsweepError, FileNotFoundError):
    """A run has no table and no journal to rebuild it from."""


def run_dir(run: str | Path) -> Path:
    """A run name (``results/<name>``) or a path (anything with a '/' or starting with '.')."""
    text = str(run)
    if "/" in text or text.startswith("."):
        return Path(text).expanduser()
    return RESULTS_DIR / text


class RunStore:
    def __init__(self, path: Path, table: str = "episodes", key: str = "cell_id",
                 keep: Keep = "first"):
        self.path = Path(path)
        self.table = table
        self.key = key
        # episodes keep their first row (a cell is generated once); verdicts their last
        # (re-judging an unscored verdict supersedes it).
        self.keep = keep
        self.journal = self.path / f"{table}.jsonl"
        self._lock = threading.Lock()
        self._fh: TextIO | None = None
        self._lockfile: TextIO | None = None

    # -- lifecycle
    def open(self) -> RunStore:
        self.path.mkdir(parents=True, exist_ok=True)
        self._lockfile = (self.path / f".{self.table}.lock").open("w")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(f"{self.path} is being written by another process") from None
        self._repair_tail()
        self._fh = self.journal.open("a", encoding="utf-8")
        return self

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        if self._lockfile:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
            self._lockfile.close()
            self._lockfile = None

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _repair_tail(self) -> None:
        if not self.journal.exists():
            return
        data = self.journal.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.journal.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    # -- rows
    def rows(self) -> list[dict]:
        if not self.journal.exists():
            return []
        rows = []
        # Split on "\n" only: str.splitlines also breaks at U+2028, U+0085 and other separators
        # that json.dumps(ensure_ascii=False) leaves raw inside strings, and a model's reply may
        # hold them; such a row would read as torn and be redone on every resume.
        for line in self.journal.read_text(encoding="utf-8").split("\n"):
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn line from a killed writer; its cell is redone
        return rows

    def done_ids(self) -> set[str]:
        return {r[self.key] for r in self.rows()}

    # -- shards: one journal per concurrent writer
    def shard(self, name: str) -> RunStore:
        """The store of one of several concurrent writers of this table (not yet opened)."""
        if not name or "/" in name or "." in name:
            raise ValueError(f"shard name {name!r} must be non-empty, without '/' or '.'")
        return RunStore(self.path, f"{self.table}.{name}", self.key, self.keep)

    def shards(self) -> list[RunStore]:
        """The shard stores present in this run folder."""
        names = sorted(p.name[len(self.table) + 1:-len(".jsonl")] for p in self.path.glob(f"{self.table}.*.jsonl"))
        return [RunStore(self.path, f"{self.table}.{n}", self.key, self.keep) for n in names if "." not in n]

    def done_ids_everywhere(self) -> set[str]:
        """Keys recorded in this journal or in any shard's."""
        return self.done_ids().union(*(s.done_ids() for s in self.shards()))

    def absorb_shards(self) -> int:
        """Fold every shard no writer holds into this (open) store: rows of keys new here are
        appended, in order, then the shard is removed. Returns the rows dropped because their
        key was already recorded (a cell generated twice)."""
        if self.keep != "first":
            raise ValueError(f"{self.table}: only first-row tables take shards")
        done = self.done_ids()
        dropped = 0
        for shard in self.shards():
            try:
                shard.open()
            except RunInUse:
                continue  # still being written: the next open takes it
            try:
                for row in shard.rows():
                    if row[self.key] in done:
                        dropped += 1
                        continue
                    self.append(row)
                    done.add(row[self.key])
            finally:
                shard.close()
            # Appended and fsynced above before the shard goes: a crash here repeats no work.
            shard.journal.unlink(missing_ok=True)
            (self.path / f".{shard.table}.lock").unlink(missing_ok=True)
        return dropped

    def latest(self) -> dict[str, dict]:
        """The last row written for each key."""
        return {r[self.key]: r for r in self.rows()}

    def append(self, row: dict) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError(f"{self.journal}: append to a store that is not open")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def frame(self) -> pl.DataFrame:
        rows = self.rows()
        if not rows:
            return pl.DataFrame()
        frame = pl.DataFrame(rows, infer_schema_length=None).unique(subset=[self.key], keep=self.keep,
                                                                    maintain_order=True)
        return conform(frame, SCHEMAS.get(self.table, {}))

    def write_table(self) -> pl.DataFrame:
        df = self.frame()
        tmp = self.path / f".{self.table}.parquet.tmp"
        df.write_parquet(tmp)
        os.replace(tmp, self.path / f"{self.table}.parquet")
        return df

    # -- manifest
    def update_manifest(self, **fields) -> dict:
        return update_manifest(self.path, **fields)


def read_table(folder: Path, table: str = "episodes", key: str = "cell_id", keep: Keep = "first") -> pl.DataFrame:
    """A run's table; rebuilt from its journal when the parquet is missing or unreadable.

    The journal is the record (the parquet is derived from it), so a deleted or damaged table
    costs nothing. Without a journal, an unreadable table is an error that names the file.
    """
    folder = Path(folder)
    file = folder / f"{table}.parquet"
    problem = "missing"
    if file.is_file():
        try:
            return pl.read_parquet(file)
        except Exception as exc:  # polars raises several types for a damaged file
            problem = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    journal = folder / f"{table}.jsonl"
    if journal.is_file():
        with RunStore(folder, table, key, keep) as store:
            return store.write_table()
    if problem == "missing":
        raise TableMissing(f"{file}: missing, and no {journal.name} journal to rebuild it from")
    raise RunFileError(f"{file}: {problem}, and no {journal.name} journal to rebuild it from")


def read_manifest(folder: Path) -> dict:
    """``folder/manifest.json``, or ``{}`` when there is none."""
    file = Path(folder) / "manifest.json"
    if not file.exists():
        return {}
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFileError(f"{file}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise RunFileError(f"{file}: expected a JSON object")
    return manifest


def update_manifest(folder: Path, **fields) -> dict:
    """Merge ``fields`` into ``folder/manifest.json`` (written atomically)."""
    file = Path(folder) / "manifest.json"
    manifest = read_manifest(folder) or {"created": time.time()}
    manifest.update(fields, updated=time.time())
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, file)
    return manifest
