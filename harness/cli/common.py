"""What every command shares: the app with its one error handler, option checks, output."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from harness.errors import EXIT_BUG, EXIT_INCOMPLETE, EXIT_REFUSED, IncompleteError, InputError, SkillsweepError

console = Console()
err = Console(stderr=True)
_verbose = False


class App(typer.Typer):
    """The one place an error reaches the user: one line, and an exit code that says what
    happened (see harness.errors); ``skillsweep -v`` adds the traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except SkillsweepError as exc:
            _exit(exc, str(exc), exc.exit_code)
        except Exception as exc:
            _exit(exc, f"unexpected {type(exc).__name__}: {exc} (a bug in skillsweep; "
                       "`skillsweep -v ...` shows the traceback)", EXIT_BUG)


def _exit(exc: BaseException, message: str, code: int) -> None:
    if _verbose:
        traceback.print_exception(exc)
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


app = App(no_args_is_help=True, add_completion=False,
          help="Evaluate procedural-skill fine-tuning on vLLM. Exit codes: 0 done, 1 incomplete "
               "(re-run to finish), 2 refused (bad input; nothing done), 3 a bug.")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more; show tracebacks")] = False) -> None:
    global _verbose
    _verbose = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def group(name: str, help: str) -> typer.Typer:
    """A command group (``skillsweep NAME ...``) under the app."""
    sub = typer.Typer(no_args_is_help=True, help=help)
    app.add_typer(sub, name=name)
    return sub


def fail(message: str, code: int = EXIT_REFUSED) -> SkillsweepError:
    """An error for :class:`App` to report: ``raise fail(...)``."""
    return IncompleteError(message) if code == EXIT_INCOMPLETE else InputError(message)


@contextmanager
def refusing(*types: type[BaseException]) -> Iterator[None]:
    """Library errors of these types (bad input that is not yet a SkillsweepError, e.g. a
    ValueError from a parser or a missing file) refuse the command like any SkillsweepError."""
    try:
        yield
    except SkillsweepError:
        raise
    except types as exc:
        raise fail(str(exc)) from exc


def require(ok: bool, option: str, value, accepted: str) -> None:
    """Refuse an option value before any work starts, naming the option and what is accepted."""
    if not ok:
        raise fail(f"{option} {value!r}: expected {accepted}")


def positive(**options: int | float | None) -> None:
    """Options (by parameter name) that must be >= 1 when given."""
    for name, value in options.items():
        require(value is None or value >= 1, "--" + name.replace("_", "-"), value, "a number >= 1")


def deprecated(old_value, new_value, old: str, new: str):
    """An option renamed: the value given under its old spelling (with a note on stderr), else
    the new one. The old spelling is kept for one release."""
    if old_value is None:
        return new_value
    err.print(f"note: {old} is deprecated here and goes in the next release; use {new}", highlight=False)
    if new_value is not None and new_value != old_value:
        raise fail(f"{old} {old_value!r} and {new} {new_value!r}: give one of them")
    return old_value


def parse_adapter(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` as given to ``--adapter``."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise fail(f"--adapter {spec!r}: expected NAME=PATH")
    return name, Path(path)


def print_json(value, indent: int | None = None) -> None:
    """Print a value as JSON on stdout (anything JSON lacks as its string)."""
    print(json.dumps(value, indent=indent, default=str))
