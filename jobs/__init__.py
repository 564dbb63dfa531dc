"""Job entrypoints (Ray jobs, benchmarks, the demo)."""
