"""The base of every error a user can act on.

Each one says what is wrong, where (file, record, field or option) and what would be accepted.
The command line prints it as one line and exits with ``exit_code``; any other exception is a
bug and is reported as one (``-v`` shows the traceback of either).
"""

from __future__ import annotations

# Exit codes of the ``skillsweep`` command (documented in the README).
EXIT_OK = 0
EXIT_INCOMPLETE = 1  # it ran, but produced less than it was asked for; a re-run may complete it
EXIT_REFUSED = 2  # bad input: an option, file, config or server; nothing was done
EXIT_BUG = 3  # an unexpected error inside skillsweep


class SkillsweepError(Exception):
    exit_code = EXIT_REFUSED


class InputError(SkillsweepError, ValueError):
    """A command-line option or argument that cannot be used."""


class IncompleteError(SkillsweepError):
    """The command ran but some of what it was asked for is missing."""

    exit_code = EXIT_INCOMPLETE
