"""Training recipes as config: every variant of the study is a YAML file, not a code change."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import SkillsweepError
from harness.yaml_models import Seeds, beside, load_yaml_model
from train.corpus_transforms import TRANSFORMS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraParams(_Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class PartialParams(_Strict):
    top_k_layers: int = Field(6, ge=1)


class TrainParams(_Strict):
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(2048, ge=16)
    max_steps: int = -1
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # passed as transformers 5 warmup_steps (a ratio when < 1)


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base_model: str
    method: Literal["lora", "partial"] = "lora"
    corpus: str
    transforms: list[dict] = [{"kind": "curated-only"}]
    chat_template: Literal["own", "chatml"] = "own"
    seeds: Seeds = Field([0], min_length=1)
    lora: LoraParams = LoraParams()
    partial: PartialParams = PartialParams()
    training: TrainParams = TrainParams()


class RecipeError(SkillsweepError, ValueError):
    pass


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file; the corpus and transform sources it names are relative to the file."""
    path = Path(path)
    recipe = load_yaml_model(path, Recipe, RecipeError, "recipe")
    for i, step in enumerate(recipe.transforms):
        if step.get("kind") not in TRANSFORMS:
            raise RecipeError(f"{path}, field 'transforms.{i}.kind': {step.get('kind')!r} is not one of "
                              f"{', '.join(TRANSFORMS)}")
        if isinstance(step.get("source"), str):
            step["source"] = beside(path, step["source"])
    return recipe.model_copy(update={"corpus": beside(path, recipe.corpus)})
