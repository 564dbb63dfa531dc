"""Chat completions against OpenAI-compatible servers, through litellm.

One place for how skillsweep talks to a served model: probes, chat, preflight and (later)
bulk generation all go through here, so a sampling setting means the same thing everywhere.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from harness.libenv import quiet_litellm

# A local engine is never given a wall-clock cap: a busy CPU engine can take many minutes over
# its queue, and an abandoned request is only generated again. Liveness comes from the engine's
# own health and metrics (serve.engine_watch). litellm turns None into 600 s, hence a huge value.
NO_TIMEOUT_S = 30 * 24 * 3600.0
# API models (a provider behind litellm) keep a per-call cap, and retries.
API_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Sampling:
    """Greedy by default: the study's protocol, and what makes outputs comparable."""

    temperature: float = 0.0
    max_tokens: int = 256
    repetition_penalty: float | None = None
    seed: int | None = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float


def normalize_url(url: str) -> str:
    """Accept ``http://host:port`` or ``http://host:port/v1``; return the ``/v1`` form."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def build_messages(prompt: str, system: str | None = None, history: list[dict] | None = None) -> list[dict]:
    """Chat messages for one user prompt: the system message if any, earlier turns, then the prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + list(history or []) + [{"role": "user", "content": prompt}]


# The key a skillsweep server (vLLM ``--api-key``) wants, from the environment only. A sweep on
# several nodes binds its servers to the node's address behind a key of its own (jobs.sweep).
SERVER_API_KEY_ENV = "SKILLSWEEP_SERVER_API_KEY"


def server_api_key() -> str | None:
    """The key for servers addressed by URL, when one is set."""
    return os.environ.get(SERVER_API_KEY_ENV) or None


def server_headers() -> dict[str, str]:
    """HTTP headers for a server's ``/v1`` routes (its key, when one is set)."""
    key = server_api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def is_local_engine(litellm_model_name: str) -> bool:
    """A vLLM server addressed by URL (``hosted_vllm/…``): an engine we watch rather than time out."""
    return litellm_model_name.startswith("hosted_vllm/")


def litellm_model(url: str | None, model: str) -> str:
    """A served name on ``url`` is reached as ``hosted_vllm/<name>``; without a URL, ``model`` is a
    litellm model string naming its provider (``anthropic/…``, ``openrouter/…``)."""
    return f"hosted_vllm/{model}" if url else model


def _request(url: str | None, model: str, messages: list[dict], sampling: Sampling,
             timeout_s: float | None = None) -> dict:
    extra = {"repetition_penalty": sampling.repetition_penalty} if sampling.repetition_penalty else {}
    where = {"api_base": normalize_url(url),
             # Local servers take any key; a real one comes from the environment only.
             "api_key": server_api_key() or "EMPTY"} if url else {}
    return dict(
        model=litellm_model(url, model),
        **where,
        messages=messages,
        temperature=sampling.temperature,
        max_tokens=sampling.max_tokens,
        seed=sampling.seed,
        extra_body=extra or None,
        timeout=timeout_s or (NO_TIMEOUT_S if url else API_TIMEOUT_S),
        # Retries are ours (harness.retry), where the kind of failure is known.
        max_retries=0,
        num_retries=0,
    )


def _completion(response, started: float) -> Completion:
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    return Completion(
        text=choice.message.content or "",
        finish_reason=choice.finish_reason,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        latency_s=time.perf_counter() - started,
    )


def chat(url: str | None, model: str, messages: list[dict], sampling: Sampling = Sampling(),
         timeout_s: float | None = None) -> Completion:
    """One chat completion through litellm, from the server at ``url`` (None: the model's provider), timed."""
    litellm = quiet_litellm()
    started = time.perf_counter()
    return _completion(litellm.completion(**_request(url, model, messages, sampling, timeout_s)), started)


async def achat(url: str | None, model: str, messages: list[dict], sampling: Sampling = Sampling(),
                timeout_s: float | None = None) -> Completion:
    """The asynchronous :func:`chat`, for fanning out many requests at once."""
    litellm = quiet_litellm()
    started = time.perf_counter()
    return _completion(await litellm.acompletion(**_request(url, model, messages, sampling, timeout_s)), started)
