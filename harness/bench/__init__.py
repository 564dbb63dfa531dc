"""The bench: procedural skills and the tasks that exercise them."""

from harness.bench.load import bench_spec, load_bench
from harness.bench.model import Bench, BenchError, QueryType, Skill, Task

__all__ = ["Bench", "BenchError", "QueryType", "Skill", "Task", "bench_spec", "load_bench"]
