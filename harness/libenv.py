"""Library defaults, set in one place before those libraries are imported.

litellm downloads a price map at import unless told not to, and prints a "Give Feedback /
Get Help" banner (plus a debug hint) for every failed call: in a sweep with retried calls
that banner drowns the log. Ray and vLLM send usage statistics unless told not to.
"""

from __future__ import annotations

import logging
import os

DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


# Every vLLM server process gets these whatever its caller's environment says (runtime LoRA
# loading, no usage statistics), and the hub offline unless the caller says otherwise.
SERVER_ENV = {
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
SERVER_DEFAULTS = {"HF_HUB_OFFLINE": "1"}
# A Ray job submitted by skillsweep (jobs.submit): no usage statistics, token authentication.
RAY_JOB_ENV = {"RAY_USAGE_STATS_ENABLED": DEFAULTS["RAY_USAGE_STATS_ENABLED"], "RAY_AUTH_MODE": "token"}


def server_env_defaults(env: dict[str, str]) -> dict[str, str]:
    """The library settings for a server process started with ``env``."""
    return {**{k: env.get(k, v) for k, v in SERVER_DEFAULTS.items()}, **SERVER_ENV}


def apply_env_defaults() -> None:
    """Set the library defaults in the environment, leaving any the user has set."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def quiet_litellm():
    """Import litellm with its banners and debug hints off; returns the module."""
    apply_env_defaults()
    import litellm

    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return litellm
