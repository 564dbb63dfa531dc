"""Judging: deterministic extraction, the LLM judge, the fan-out, verdict tables, agreement."""
