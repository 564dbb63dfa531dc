"""How many server replicas each base gets, which base gets the next one, and which training
goes first (pure functions).

The rule (README, "Running on a cluster"):

* A base (or a served judge, or a fully fine-tuned checkpoint) with ``replicas`` set in its
  model entry, or ``resources.replicas`` for all, gets exactly that many, from the start.
* Otherwise, on a GPU pool, **trainings come first**: every GPU goes to a training (longest
  first, a full checkpoint first among equals) while any is still to run, and a replica starts
  only on a GPU no training still to run needs (:func:`free_gpus`). Each such GPU, at the start
  and whenever a training ends or a server stops, goes to (1) one replica **ahead of the
  training expected to end last** (the critical path), once its server's start-up would have
  the replica up by then (:func:`ahead_of_training`); then (2) a server with no replica (the
  most work first); then (3) one more replica of the server with the most generation work left
  per replica (:func:`next_replica`). A fully fine-tuned checkpoint's server is declared when its
  training ends and competes like any other; a server that judges, the teacher or probes use
  starts one replica at once (a teacher behind the trainings it feeds would never start). A
  server left with no work (and no judge, teacher or probes using it) is stopped: its GPUs go
  to the rest.
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


def ahead_of_training(now: float, trainings: Mapping[str, tuple[float, str]], startup: Mapping[str, float],
                      started_ahead: set[str]) -> tuple[str, str] | None:
    """(training, server) when the training expected to end last should get one more replica of
    its server now, else None. That training and then its adapter's cells are the sweep's
    critical path; a replica started one start-up before it ends is up when the cells come, and
    halves their tail. Once per training, and only while it still runs.

    ``trainings``: label → (expected end, server key) of the trainings running now whose end
    the throughput model can tell; ``startup``: a new replica's start-up, by server key (a
    server not in it, e.g. a full checkpoint not yet served, gets nothing ahead)."""
    if not trainings:
        return None
    label, (end, key) = max(trainings.items(), key=lambda item: item[1][0])
    if label in started_ahead or key not in startup:
        return None
    return (label, key) if end - startup[key] <= now < end else None


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
