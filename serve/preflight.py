"""Is a loaded adapter actually applied? Compare its greedy output with the base model's.

Harnesses that pass an adapter name the server does not apply (wrong name, rank dropped,
zero weights) silently evaluate the base model; an adapter whose greedy output equals the
base's on every probe is reported instead of trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.client import Sampling, build_messages, chat

PROBE_PROMPTS = (
    "In one sentence, what is a logical fallacy?",
    "Is the following argument valid? All birds fly; penguins are birds; so penguins fly.",
    "List three steps for checking a claim.",
)


@dataclass(frozen=True)
class PreflightReport:
    adapter: str
    base: str
    probes: int
    differing: int

    @property
    def identical(self) -> bool:
        return self.differing == 0

    def describe(self) -> str:
        if self.identical:
            return (f"adapter {self.adapter} gives the same greedy output as base {self.base} on "
                    f"all {self.probes} probes: it may be ignored or have zero weights")
        return f"adapter {self.adapter} differs from base {self.base} on {self.differing}/{self.probes} probes"


def preflight(url: str, base: str, adapter: str, prompts=PROBE_PROMPTS, max_tokens: int = 16) -> PreflightReport:
    """How many probe prompts an adapter answers differently from its base (0: it may not be applied)."""
    sampling = Sampling(max_tokens=max_tokens)
    differing = 0
    for prompt in prompts:
        messages = build_messages(prompt)
        if chat(url, base, messages, sampling).text != chat(url, adapter, messages, sampling).text:
            differing += 1
    return PreflightReport(adapter, base, len(prompts), differing)
