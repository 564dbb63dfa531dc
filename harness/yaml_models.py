"""Reading a YAML file into a pydantic model, with errors that name the file and the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


def _unique(values: list) -> list:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{', '.join(map(str, repeated))} listed more than once; each may appear once")
    return values


# Seeds of a recipe or an adapter: each one names a training, so they are distinct and >= 0.
Seeds = Annotated[list[Annotated[int, Field(ge=0)]], AfterValidator(_unique)]


def load_yaml_model(path: str | Path, model: type[M], error: type[Exception], what: str) -> M:
    """A YAML file validated as a pydantic model; errors name the file and the first bad field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise error(f"{path}, field '{field}': {first['msg']}") from None


def beside(file: str | Path, value: str) -> str:
    """A path named inside ``file``, relative to the folder of ``file`` (absolute paths and ``~``
    are kept), so a config means the same files whatever the working directory."""
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(Path(file).parent / expanded)
