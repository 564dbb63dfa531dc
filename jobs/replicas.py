"""How many server replicas each base gets, which base gets the next one, and which training
goes first (pure functions).

The rule (README, "Running on a cluster"):

* A base (or a served judge, or a fully fine-tuned checkpoint) with ``replicas`` set in its
  model entry, or ``resources.replicas`` for all, gets exactly that many, from the start.
* Otherwise a server starts with one replica at once. On a GPU pool the GPUs no replica holds
  go to trainings (longest first), and every GPU no training still to run needs (at the start,
  and each time a training ends) becomes one more replica of the server with the most generation
  work left per replica (its targets' cells × max_tokens at the full-batch rate of its size).
  Every server's first replica is declared before any grows; a fully fine-tuned checkpoint's
  server takes the GPU its training frees; a server only judges, the teacher or probes use gets
  one replica. A server left with no work (and no judge, teacher or probes using it) is stopped:
  its GPUs go to the rest.
* Without GPUs (a CPU node) a derived count is one: the cores are already split between servers.
"""

from __future__ import annotations

from collections.abc import Mapping

from serve.sim_model import decode_rate, engine_params, parse_size


def free_gpus(total: float, replicas: int, serve_gpus: float, trainings_left: int, train_gpus: float) -> float:
    """GPUs neither a replica nor a training still to run will use: trainings come first."""
    held = replicas * serve_gpus
    reserved = min(trainings_left * train_gpus, max(0.0, total - held))
    return max(0.0, total - held - reserved)


def next_replica(remaining: Mapping[str, float], replicas: Mapping[str, int], fixed: set[str]) -> str | None:
    """The server that gets one more replica: one that has none yet (the most work first), else
    the most work left per replica, among servers whose count is not fixed by the config and that
    have work left; None when none has."""
    candidates = {key: (replicas.get(key, 0) == 0, work / max(1, replicas.get(key, 0)))
                  for key, work in remaining.items() if key not in fixed and work > 0}
    return max(candidates, key=lambda key: candidates[key]) if candidates else None


def training_weight(size: str | None, epochs: float) -> float:
    """A training's length in comparable units (parameters x epochs): the longest are submitted
    first, since they hold the critical path (an adapter's cells wait for its training)."""
    try:
        params = parse_size(size) if size else 1.0
    except ValueError:
        params = 1.0
    return params * epochs


def work_weight(cells: int, max_tokens: int, size: str | None) -> float:
    """A target's generation work in GPU-seconds, comparable across model sizes: its tokens at the
    throughput model's full-batch rate for its size (serve.sim_model, H100 figures; only the
    ratios between sizes matter here). A size that is no parameter count ("tiny") counts its
    tokens alone."""
    try:
        rate = decode_rate(engine_params("h100", size), 256) if size else None
    except ValueError:
        rate = None
    return cells * max_tokens / (rate or 1.0)
