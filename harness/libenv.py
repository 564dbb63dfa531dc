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


def apply_env_defaults() -> None:
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
