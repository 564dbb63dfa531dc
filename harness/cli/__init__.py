"""The ``skillsweep`` command line: the top layer, one thin command per operation, grouped by
domain. Each module registers its commands on :data:`app`, in the order ``--help`` lists them."""

# isort: off
from harness.cli.common import app
from harness.cli import serving, generation, judging, statistics, authoring, training, sweeps  # noqa: F401
# isort: on

__all__ = ["app"]
