"""The ``skillsweep`` command line: the top layer, one thin command per operation, grouped by
domain. Each module registers its commands on :data:`app`, in the order ``--help`` lists them."""

from harness.cli.common import app
from harness.cli import serving, generation, judging, statistics, authoring, training, sweeps  # noqa: E402,F401,I001

__all__ = ["app"]
