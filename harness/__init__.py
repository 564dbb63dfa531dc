"""skillsweep harness: bench, prompts, generation client, judging, statistics, report, CLI."""

import os

# litellm fetches a price map from the internet at import unless told otherwise; every
# module that can import litellm lives under this package.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
