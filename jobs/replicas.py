"""How many server replicas each base gets, and which base gets the next one (pure functions).

The rule (README, "Running on a cluster"):

* A base (or a served judge, or a fully fine-tuned checkpoint) with ``replicas`` set in its
  model entry, or ``resources.replicas`` for all, gets exactly that many, from the start.
* Otherwise it starts with one. On a GPU pool the GPUs no server holds go to trainings first
  (``train_gpus`` each, as many as are still to run); the rest, and every GPU a finished training
  gives back, becomes one more replica of the base with the most generation work left per replica
  (cells × max_tokens × parameters, of its targets not yet generated), while it has any.
* Without GPUs (a CPU node) a derived count is one: the cores are already split between servers.
"""

from __future__ import annotations

from collections.abc import Mapping

from serve.sim_model import parse_size


def free_gpus(total: float, replicas: int, serve_gpus: float, trainings_left: int, train_gpus: float) -> float:
    """GPUs neither a replica nor a training still to run will use: trainings come first."""
    held = replicas * serve_gpus
    reserved = min(trainings_left * train_gpus, max(0.0, total - held))
    return max(0.0, total - held - reserved)


def next_replica(remaining: Mapping[str, float], replicas: Mapping[str, int], fixed: set[str]) -> str | None:
    """The base that gets one more replica: the most work left per replica, among bases whose
    count is not fixed by the config and that have work left; None when none has."""
    candidates = {key: work / max(1, replicas.get(key, 0)) for key, work in remaining.items()
                  if key not in fixed and work > 0}
    return max(candidates, key=lambda key: candidates[key]) if candidates else None


def work_weight(cells: int, max_tokens: int, size: str | None) -> float:
    """A target's generation work in comparable units: decode time grows with tokens and parameters."""
    try:
        params = parse_size(size) if size else 1.0
    except ValueError:
        params = 1.0  # a size like "tiny" or "frontier": only the tokens count
    return cells * max_tokens * params
