"""skillsweep harness: bench, prompts, generation client, judging, statistics, report, CLI."""

from harness.libenv import apply_env_defaults

# Every module that can import litellm, Ray or vLLM lives under this package or imports it.
apply_env_defaults()
