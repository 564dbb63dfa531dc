"""What each Ray actor and task of a sweep declares, derived from the node and the plan.

The rule (also in the README, "Resources"):

* **GPU nodes.** A server declares ``serve_gpus`` GPUs and one CPU (its API front end and
  engine core); a trainer ``train_gpus`` GPUs and one CPU.
* **CPU-only nodes, ``in-turn`` (the default).** Servers split every core between them
  (disjoint sets), the trainer binds every core, and the sweep's driver runs serving and
  training in turn (:class:`jobs.turns.TurnGate`): a training starts when no generation or
  judging runs, and serving waits while it trains. Ray's declarations split the node in half
  between the two sides (the gate, not Ray, keeps them apart), less :data:`HARNESS_SHARE`.
* **CPU-only nodes, ``partition``.** Cores are partitioned (:func:`serve.hardware.partition_cores`): each
  server binds its own cores and declares that many CPUs; the trainer runs on the rest and
  declares them less :data:`HARNESS_SHARE`, the part of a core left to the light processes
  that share it (vLLM front ends, drivers, judge fan-outs). When there are too few cores for
  disjoint sets the plan says so and the declarations become fractions, so every process can
  still be scheduled (slower, never deadlocked).
* **Drivers and judge fan-outs** (async HTTP clients) declare :data:`DRIVER_CPUS` each. The
  generation drivers of server replicas run together in one driver host per node, on the nodes
  whose GPU processes cannot take every CPU (:func:`driver_nodes`).

Ray admits a process only when what it declares is free, so on a CPU node a second trainer
waits for the first instead of splitting its cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.hardware import CorePlan, partition_cores

DRIVER_CPUS = 0.05
HARNESS_SHARE = 0.25


@dataclass(frozen=True)
class Declaration:
    num_cpus: float
    num_gpus: float = 0.0
    cores: tuple[int, ...] = ()  # CPU nodes: the cores the process binds (empty: unbound)

    def options(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    def describe(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "cores": list(self.cores)}


@dataclass(frozen=True)
class ResourceModel:
    gpu: bool
    servers: tuple[Declaration, ...]
    trainer: Declaration
    driver: Declaration = field(default_factory=lambda: Declaration(DRIVER_CPUS))
    cores: CorePlan | None = None
    in_turn: bool = False  # serving and training must not overlap (the driver's gate)

    def server(self, index: int) -> Declaration:
        return self.servers[index % len(self.servers)]

    def cpu_bind(self, index: int) -> str | None:
        """``VLLM_CPU_OMP_THREADS_BIND`` for server ``index`` (None on GPU nodes)."""
        return self.cores.bind_string(index) if self.cores else None

    def describe(self) -> dict:
        return {"gpu": self.gpu, "servers": [s.describe() for s in self.servers],
                "trainer": self.trainer.describe(), "driver": self.driver.describe(),
                "cores_shared": bool(self.cores and self.cores.shared), "in_turn": self.in_turn}


def resource_model(*, node_cores: tuple[int, ...], gpus: float, servers: int,
                   serve_gpus: float = 1.0, train_gpus: float = 1.0, cpu_policy: str = "in-turn") -> ResourceModel:
    """Declarations for ``servers`` engines and trainings on one node."""
    servers = max(servers, 1)
    if gpus > 0:
        return ResourceModel(True, tuple(Declaration(1.0, serve_gpus) for _ in range(servers)),
                             Declaration(1.0, train_gpus))
    if cpu_policy == "in-turn" and len(node_cores) >= servers:
        plan = partition_cores(node_cores, servers, rest=False)
        half = max((len(node_cores) - HARNESS_SHARE) / 2, DRIVER_CPUS)
        return ResourceModel(False, tuple(Declaration(round(half / servers, 3), 0.0, s) for s in plan.servers),
                             Declaration(round(half, 3), 0.0, plan.rest), cores=plan, in_turn=True)
    plan = partition_cores(node_cores, servers)
    if plan.shared:
        # Everyone overlaps: declare a fair fraction so all fit on the node at once.
        share = round(max(len(node_cores) - HARNESS_SHARE, DRIVER_CPUS) / (servers + 1), 3)
        return ResourceModel(False, tuple(Declaration(share, 0.0, s) for s in plan.servers),
                             Declaration(share, 0.0, plan.rest), cores=plan)
    return ResourceModel(False, tuple(Declaration(float(len(s)), 0.0, s) for s in plan.servers),
                         Declaration(max(len(plan.rest) - HARNESS_SHARE, DRIVER_CPUS), 0.0, plan.rest),
                         cores=plan)


def driver_nodes(nodes: list[tuple[str, float, float]], serve_gpus: float, train_gpus: float) -> list[str]:
    """The nodes (``(id, CPUs, GPUs)``) that keep :data:`DRIVER_CPUS` to spare however their GPUs
    are used: every GPU process (a server or a trainer) declares one CPU, so a node's GPUs can
    claim ``GPUs / GPUs per process`` of its CPUs. A node whose GPU processes may take every CPU
    runs no driver host: a host placed there would hold back the last server."""
    per_process = min((g for g in (serve_gpus, train_gpus) if g > 0), default=0.0)
    return [node for node, cpus, gpus in nodes
            if cpus - (gpus / per_process if per_process else 0.0) >= DRIVER_CPUS - 1e-9]
