"""Where skillsweep keeps state that is not part of a run: the model store."""

from __future__ import annotations

import os
from pathlib import Path


def skillsweep_home() -> Path:
    """Root of skillsweep's cache (``$SKILLSWEEP_HOME``, default ``~/.cache/skillsweep``)."""
    env = os.environ.get("SKILLSWEEP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "skillsweep"


def models_dir() -> Path:
    """The model store (``$SKILLSWEEP_MODELS``, default ``<home>/models``)."""
    env = os.environ.get("SKILLSWEEP_MODELS")
    return Path(env).expanduser() if env else skillsweep_home() / "models"
