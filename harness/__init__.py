"""skillsweep harness: bench, prompts, generation client, judging, statistics, report, CLI."""
