"""The generality probe: an out-of-distribution battery run beside the bench (the study's Table 8)."""
