"""The adapter registry: runtime LoRA load / unload / list on a running vLLM server.

The server is the source of truth (``GET /v1/models`` lists loaded adapters), so several
processes (``skillsweep serve``, ``skillsweep adapters add``, a sweep) can share one server.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from harness.client import normalize_url, server_headers
from harness.errors import SkillsweepError
from harness.models import ResolvedModel, model_identity
from serve.adapters import AdapterError, AdapterInfo, served_name, validate_adapter
from serve.preflight import PreflightReport, preflight
from serve.server import server_record


class RegistryError(SkillsweepError, RuntimeError):
    """The server refused or failed an adapter operation."""


def _models(api: str) -> list[dict]:
    """The server's model cards; an unreachable or foreign server is a located error."""
    try:
        response = httpx.get(api + "/models", timeout=10, headers=server_headers())
        response.raise_for_status()
        models = response.json()["data"]
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise RegistryError(f"cannot reach a vLLM server at {api}: {exc or type(exc).__name__}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{api}/models: not an OpenAI-compatible model list ({exc!r})") from exc
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise RegistryError(f"{api}/models: not an OpenAI-compatible model list")
    return models


@dataclass(frozen=True)
class LoadedAdapter:
    served_name: str
    path: str
    base: str

    @property
    def alias(self) -> str:
        return self.served_name.rsplit("-", 1)[0]


@dataclass
class AdapterRegistry:
    url: str
    base: ResolvedModel
    base_served_name: str
    max_rank: int

    @classmethod
    def connect(cls, url: str, max_rank: int | None = None) -> AdapterRegistry:
        """Attach to a running server; its base model and rank limit are read from it."""
        api = normalize_url(url)
        models = _models(api)
        base_card = next((m for m in models if not m.get("parent")), None)
        if base_card is None:
            raise RegistryError(f"{url}: the server lists no base model at /v1/models")
        record = server_record(urlparse(api).port) or {}
        location = base_card.get("root") or base_card["id"]
        identity = record.get("base_identity") or model_identity(location)
        base = ResolvedModel(location, "path", location, identity)
        rank = max_rank or record.get("max_lora_rank") or 512
        return cls(api, base, base_card["id"], rank)

    def _post(self, endpoint: str, payload: dict) -> None:
        try:
            response = httpx.post(f"{normalize_url(self.url)}/{endpoint}", json=payload, timeout=120, headers=server_headers())
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach a vLLM server at {self.url}: {exc}") from exc
        if response.status_code != 200:
            raise RegistryError(f"{endpoint} {payload.get('lora_name')}: HTTP {response.status_code}: "
                                f"{response.text[:500]}")

    def list(self) -> list[LoadedAdapter]:
        models = _models(normalize_url(self.url))
        return [LoadedAdapter(m["id"], m.get("root", ""), m["parent"]) for m in models if m.get("parent")]

    def validate(self, path) -> AdapterInfo:
        return validate_adapter(path, self.base, self.max_rank)

    def load(self, alias: str, path, *, check: bool = True) -> tuple[LoadedAdapter, PreflightReport | None]:
        """Validate and load an adapter; loading the same weights again is a no-op.

        With ``check``, the preflight compares its greedy output with the base's.
        """
        if "/" in alias or not alias:
            raise AdapterError("bad-name", path, f"adapter name {alias!r} must be non-empty without '/'")
        info = self.validate(path)
        name = served_name(alias, info)
        current = {a.served_name: a for a in self.list()}
        if name not in current:
            self._post("load_lora_adapter", {"lora_name": name, "lora_path": str(info.path)})
        loaded = LoadedAdapter(name, str(info.path), self.base_served_name)
        report = preflight(self.url, self.base_served_name, name) if check else None
        return loaded, report

    def resolve_name(self, name: str, *, allow_base: bool = False) -> str:
        """A served name, or an alias that names exactly one loaded adapter."""
        if allow_base and name == self.base_served_name:
            return name
        loaded = self.list()
        if any(a.served_name == name for a in loaded):
            return name
        matches = [a.served_name for a in loaded if a.alias == name]
        if len(matches) != 1:
            known = ", ".join(a.served_name for a in loaded) or "none"
            raise RegistryError(f"no single loaded adapter named {name!r} (loaded: {known})")
        return matches[0]

    def unload(self, name: str) -> str:
        served = self.resolve_name(name)
        self._post("unload_lora_adapter", {"lora_name": served})
        return served
