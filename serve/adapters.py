"""Inspecting and validating PEFT LoRA adapters before a server is asked to load them.

vLLM accepts some broken adapters silently (a mismatched base can load and produce noise, a
``modules_to_save`` head is dropped), so each rule is checked here first and reported by name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from harness.errors import SkillsweepError
from harness.models import ResolvedModel, model_identity
from harness.naming import served_adapter_name
from serve.hardware import gpu_memory_bytes, host_memory_bytes

# vLLM's --max-lora-rank accepts only these values.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# Config fields that do not change what the adapter computes on a given base.
_HASH_EXCLUDED = {"base_model_name_or_path", "revision", "inference_mode", "auto_mapping"}


class AdapterError(SkillsweepError, ValueError):
    """An adapter that fails a named validation rule."""

    def __init__(self, rule: str, path: Path | str, detail: str):
        super().__init__(f"adapter {path}: [{rule}] {detail}")
        self.rule = rule
        self.path = Path(path)
        self.detail = detail


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str | None
    content_hash: str
    weights_file: Path

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]


def served_name(alias: str, info: AdapterInfo) -> str:
    """The name an adapter is served under: never reused for different weights, because
    vLLM keys its prefix cache by adapter name."""
    return served_adapter_name(alias, info.short_hash)


def content_hash(config: dict, weights_file: Path) -> str:
    """A hash of what an adapter computes: its weights and the config fields that matter."""
    h = hashlib.sha256()
    kept = {k: v for k, v in config.items() if k not in _HASH_EXCLUDED}
    h.update(json.dumps(kept, sort_keys=True, default=str).encode())
    with weights_file.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inspect_adapter(path: str | Path) -> AdapterInfo:
    """Read an adapter folder; raises :class:`AdapterError` if it is not a servable LoRA."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AdapterError("missing-path", path, "no such file or directory")
    config_file = path / "adapter_config.json"
    if not path.is_dir() or not config_file.is_file():
        raise AdapterError("not-peft", path, "no adapter_config.json: not a PEFT adapter folder")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise AdapterError("not-peft", path, f"adapter_config.json is not JSON: {exc}") from exc
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError("not-lora", path, f"peft_type is {peft_type or 'missing'!r}, not 'LORA'")
    if config.get("modules_to_save"):
        raise AdapterError(
            "modules-to-save", path,
            f"modules_to_save={config['modules_to_save']}: vLLM cannot serve fully trained "
            "modules inside an adapter; serve a merged or partial fine-tuned checkpoint instead")
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise AdapterError("no-weights", path, f"none of {', '.join(WEIGHT_FILES)} present")
    ranks = [int(config.get("r", 0)), *map(int, (config.get("rank_pattern") or {}).values())]
    targets = config.get("target_modules") or ()
    return AdapterInfo(
        path=path.resolve(),
        rank=max(ranks),
        alpha=float(config.get("lora_alpha", 0)),
        target_modules=tuple([targets] if isinstance(targets, str) else sorted(targets)),
        base_model=config.get("base_model_name_or_path"),
        content_hash=content_hash(config, weights),
        weights_file=weights,
    )


def check_rank(info: AdapterInfo, max_rank: int) -> None:
    """Refuse an adapter whose rank exceeds the server's ``max_lora_rank``."""
    if info.rank > max_rank:
        raise AdapterError("rank-too-large", info.path,
                           f"rank {info.rank} exceeds the server's max_lora_rank {max_rank}")


def check_base(info: AdapterInfo, base: ResolvedModel) -> None:
    """The adapter must have been trained on the served base: same identity, same shapes."""
    if info.base_model:
        adapter_base = model_identity(info.base_model)
        if adapter_base != base.identity:
            raise AdapterError(
                "base-mismatch", info.path,
                f"trained on {adapter_base!r}, but the server's base is {base.identity!r}")
    if info.weights_file.suffix == ".safetensors" and Path(base.location).is_dir():
        _check_shapes(info, Path(base.location))


def _base_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def _check_shapes(info: AdapterInfo, model_dir: Path) -> None:
    base = _base_shapes(model_dir)
    if not base:
        return
    with safe_open(str(info.weights_file), framework="pt") as f:
        for key in f.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            module = key.removeprefix("base_model.model.").split(".lora_")[0]
            target = base.get(module + ".weight")
            if target is None:
                raise AdapterError("base-mismatch", info.path,
                                   f"module {module} does not exist in the served base")
            shape = tuple(f.get_slice(key).get_shape())
            # lora_A is (r, in_features), lora_B is (out_features, r); base is (out, in).
            expected = target[1] if ".lora_A." in key else target[0]
            actual = shape[1] if ".lora_A." in key else shape[0]
            if actual != expected:
                raise AdapterError(
                    "base-mismatch", info.path,
                    f"{key} has shape {shape}, which does not fit {module} {target} of the served base")


def validate_adapter(path: str | Path, base: ResolvedModel, max_rank: int) -> AdapterInfo:
    """Inspect an adapter and check that the server can load it on this base."""
    info = inspect_adapter(path)
    check_rank(info, max_rank)
    check_base(info, base)
    return info


# LoRA capacity (README, "Simulated engine and estimates" → "LoRA capacity").
# A batch of max_num_seqs requests, each target keeping `concurrency` in flight, mixes at most
# max_num_seqs / concurrency adapters (vLLM 256 / skillsweep 32): slots beyond that stay unused.
BATCH_ADAPTERS = 256 // 32
LORA_GPU_SHARE = 0.05  # of a replica's GPU memory for LoRA slots (taken from the KV cache)
LORA_HOST_SHARE = 0.10  # of host memory for adapters kept in vLLM's CPU cache
MIN_LORA_RANK = 8  # the smallest --max-lora-rank a server gets
ROOM_LORA_RANK = 16  # ... when adapters will be added later, whose ranks are not known yet


@dataclass(frozen=True)
class LoraCapacity:
    max_lora_rank: int
    max_loras: int  # GPU slots: distinct adapters in one batch
    max_cpu_loras: int  # adapters kept in host memory; vLLM re-reads others from disk on use


def lora_rank(ranks, min_rank: int = MIN_LORA_RANK) -> int:
    """The smallest rank vLLM accepts that holds every adapter's rank (and ``min_rank``)."""
    needed = max([min_rank, *ranks])
    rank = next((r for r in VLLM_LORA_RANKS if r >= needed), None)
    if rank is None:
        raise ValueError(f"LoRA rank {needed} exceeds vLLM's largest supported rank {VLLM_LORA_RANKS[-1]}")
    return rank


def lora_slot_bytes(model_config: dict, rank: int, dtype_bytes: int = 2) -> int:
    """Bytes of one LoRA slot at ``rank``: A (rank x in) and B (out x rank) for each linear
    layer of each decoder layer (q, k, v, o, gate, up, down), as vLLM allocates per slot."""
    h = model_config["hidden_size"]
    heads = model_config.get("num_attention_heads", 1)
    head_dim = model_config.get("head_dim") or h // heads
    q, kv = heads * head_dim, model_config.get("num_key_value_heads", heads) * head_dim
    i = model_config.get("intermediate_size", 4 * h)
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
    return dtype_bytes * rank * per_layer * model_config["num_hidden_layers"]


def lora_capacity(adapters: int, ranks=(), *, min_rank: int | None = None, extra: int = 0,
                  model_config: dict | None = None, gpu_bytes: float | None = None, host_bytes: float | None = None,
                  batch_adapters: int = BATCH_ADAPTERS) -> LoraCapacity:
    """LoRA limits for a server replica that will hold ``adapters`` (+ ``extra`` added later).

    * ``max_lora_rank``: :func:`lora_rank`, at least ``MIN_LORA_RANK``, or ``ROOM_LORA_RANK``
      when adapters will be added later (``extra``): their ranks are not known yet.
    * ``max_loras`` (GPU slots): as many as adapters, at most ``batch_adapters`` (what one batch
      can mix) and at most what fits in ``LORA_GPU_SHARE`` of the replica's GPU memory.
    * ``max_cpu_loras``: every adapter, so none is re-read from disk, unless that exceeds
      ``LORA_HOST_SHARE`` of host memory; never fewer than ``max_loras`` (vLLM requires it).

    Without a model config or memory sizes only the counts apply. More adapters than slots
    work: a request whose adapter has no slot waits until one frees.
    """
    rank = lora_rank(ranks, min_rank or (ROOM_LORA_RANK if extra else MIN_LORA_RANK))
    wanted = max(1, adapters + extra)
    slots, cpu = min(wanted, max(1, batch_adapters)), wanted
    slot = lora_slot_bytes(model_config, rank) if model_config else None
    if slot and gpu_bytes:
        slots = min(slots, max(1, int(gpu_bytes * LORA_GPU_SHARE // slot)))
    if slot and host_bytes:
        cpu = min(cpu, int(host_bytes * LORA_HOST_SHARE // slot))
    return LoraCapacity(rank, slots, max(slots, cpu))


def model_config(location: str | Path) -> dict | None:
    """A checkpoint folder's ``config.json`` (its text model's part), or None."""
    try:
        config = json.loads((Path(location) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    return config if "hidden_size" in config and "num_hidden_layers" in config else None


def replica_lora_capacity(base_location: str | Path, ranks=(), adapters: int = 0, *, extra: int = 0) -> LoraCapacity:
    """:func:`lora_capacity` for a replica on this machine: the base's geometry from its
    checkpoint, the GPU's and host's memory from the hardware (run it where the server runs)."""
    ranks = list(ranks)
    return lora_capacity(adapters or len(ranks), ranks, extra=extra,
                         model_config=model_config(base_location), gpu_bytes=gpu_memory_bytes(),
                         host_bytes=host_memory_bytes())
