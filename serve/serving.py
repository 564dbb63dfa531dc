"""One way to bring up a served model: a vLLM server for a base, its LoRA limits from the one
capacity rule (:func:`serve.adapters.replica_lora_capacity`), adapters validated before the
slow start and loaded (and preflighted) through the registry after it.

``skillsweep serve``, the generation job, the sweep's server actors and the benchmarks all
start their servers here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.models import ResolvedModel
from serve.adapters import inspect_adapter, replica_lora_capacity, validate_adapter
from serve.preflight import PreflightReport
from serve.registry import AdapterRegistry, LoadedAdapter
from serve.server import HOST, ServerSpec, VLLMServer


def server_spec(base: ResolvedModel, served_name: str, adapters: Sequence[tuple[str, str | Path]] = (), *,
                lora_ranks: Sequence[int] | None = None, room_for: int = 0, enable_lora: bool | None = None,
                max_lora_rank: int | None = None, max_loras: int | None = None, **fields) -> ServerSpec:
    """The spec of a server for ``base`` and ``adapters`` (NAME, PATH), each validated here, before
    anything starts. The LoRA limits follow the capacity rule for the adapters' ranks (or
    ``lora_ranks``, those of adapters registered later) with ``room_for`` adapters added later;
    ``max_lora_rank`` / ``max_loras`` override it. LoRA is on when there are adapters, ranks
    or room for some, unless ``enable_lora`` says otherwise. ``fields``: the rest of
    :class:`ServerSpec` (max_model_len, kv_cache_gib, dtype, cpu_bind, extra_args)."""
    ranks = list(lora_ranks) if lora_ranks is not None else [inspect_adapter(p).rank for _, p in adapters]
    capacity = replica_lora_capacity(base.location, ranks, adapters=max(len(ranks), len(adapters)), extra=room_for)
    rank, slots = max_lora_rank or capacity.max_lora_rank, max_loras or capacity.max_loras
    for _, path in adapters:  # fail before a slow server start, not after
        validate_adapter(path, base, rank)
    lora = enable_lora if enable_lora is not None else bool(ranks or adapters or room_for)
    return ServerSpec(model=base.location, served_name=served_name, enable_lora=lora, max_lora_rank=rank,
                      max_loras=slots, max_cpu_loras=max(slots, capacity.max_cpu_loras), **fields)


class Serving:
    """A vLLM server with its adapter registry. ``with Serving(base, spec) as s:`` starts it and
    stops it (its whole process group); :meth:`load` validates, loads and preflights adapters."""

    def __init__(self, base: ResolvedModel, spec: ServerSpec, *, port: int | None = None, host: str = HOST,
                 api_key: str | None = None):
        self.base = base
        self.spec = spec
        self.server = VLLMServer(spec, port=port, base_identity=base.identity, host=host, api_key=api_key)
        self.registry: AdapterRegistry | None = None

    @property
    def api_base(self) -> str:
        return self.server.api_base

    def start(self) -> Serving:
        self.server.start()
        self.registry = AdapterRegistry(self.server.api_base, self.base, self.spec.served_name,
                                        self.spec.max_lora_rank)
        return self

    def load(self, alias: str, path: str | Path, *, check: bool = True) -> tuple[LoadedAdapter, PreflightReport | None]:
        if self.registry is None:
            raise RuntimeError("load an adapter after the server has started")
        return self.registry.load(alias, path, check=check)

    def load_all(self, adapters: Sequence[tuple[str, str | Path]], *,
                 check: bool = True) -> list[tuple[LoadedAdapter, PreflightReport | None]]:
        return [self.load(alias, path, check=check) for alias, path in adapters]

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Serving:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
