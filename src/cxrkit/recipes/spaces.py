"""Hyperparameter search spaces, as data, keyed by the recipe they search around.

A space maps a *recipe path* to a range:

* ``lr``, ``weight_decay``, ``image_size``, ... — a top-level :class:`Recipe` field
* ``model_kwargs.NAME`` — an argument of the model builder (``dropout``; ``hidden``, a transfer head's width)
* ``augment.FIELD`` — one augmentation magnitude
* ``augment_strength`` — one knob for all of them: the recipe's augmentation
  becomes ``strength x`` :data:`REFERENCE_AUGMENT` (cxr_cnn's; 0 = none),
  so recipes without augmentation (seed001) can be searched too

and a range is ``{"float": [low, high], "log": bool}``, ``{"int": [low,
high], "step": n}`` or ``{"choice": [...]}``. Spaces are separate from
:class:`Recipe` on purpose: a recipe stays one complete configuration (what a
run's ``config.yaml`` holds), a space is what may vary around it. A space for
a recipe file comes from a YAML file of the same shape (``cxrkit tune --space``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ..data.augment import Augment
from . import Recipe, RecipeError

REFERENCE_AUGMENT = Augment(rotation=10, zoom=0.15, shift=0.08, brightness=0.2, contrast=0.2)

SEARCH_SPACES: dict[str, dict[str, dict]] = {
    "seed001": {
        "lr": {"float": [1e-4, 1e-2], "log": True},
        "weight_decay": {"float": [1e-6, 1e-3], "log": True},
        "model_kwargs.dropout": {"float": [0.0, 0.5]},
        "augment_strength": {"float": [0.0, 1.5]},
    },
    "cxr_cnn": {
        "lr": {"float": [3e-4, 1e-2], "log": True},
        "weight_decay": {"float": [1e-5, 1e-2], "log": True},
        "model_kwargs.dropout": {"float": [0.0, 0.5]},
        "augment_strength": {"float": [0.0, 2.0]},
        "image_size": {"choice": [160, 192, 224]},  # global pooling: any size works; smaller trains faster
    },
    # Seed 004's Keras Tuner space around its frozen ResNet50: dense units, dropout and the learning rate of the
    # head, which is all that trains (recipe seed004_tune: head epochs on cached features)
    "seed004_tune": {
        "model_kwargs.hidden": {"int": [32, 512], "step": 32},
        "model_kwargs.dropout": {"float": [0.0, 0.5]},
        "head_lr": {"float": [1e-4, 1e-2], "log": True},
    },
}

_RECIPE_FIELDS = {f.name for f in dataclasses.fields(Recipe)} - {"name", "model", "version", "description",
                                                                  "model_kwargs", "augment"}
_AUGMENT_FIELDS = {f.name for f in dataclasses.fields(Augment)}


def validate_space(space: dict) -> dict:
    """Check every path and range; return the space unchanged, or raise one :class:`RecipeError` line."""
    if not isinstance(space, dict) or not space:
        raise RecipeError("a search space must be a non-empty mapping of recipe path -> range")
    for path, spec in space.items():
        head, _, tail = str(path).partition(".")
        ok_path = (path == "augment_strength" or (head == "model_kwargs" and tail)
                   or (head == "augment" and tail in _AUGMENT_FIELDS) or (not tail and path in _RECIPE_FIELDS))
        if not ok_path:
            raise RecipeError(f"search space: {path!r} is not a recipe field, model_kwargs.NAME, augment.FIELD "
                              f"or augment_strength")
        kinds = [k for k in ("float", "int", "choice") if isinstance(spec, dict) and k in spec]
        if len(kinds) != 1:
            raise RecipeError(f"search space: {path!r} needs exactly one of float: [lo, hi], int: [lo, hi] or "
                              f"choice: [...]")
        values = spec[kinds[0]]
        if not isinstance(values, list) or not values or (kinds[0] != "choice" and len(values) != 2):
            raise RecipeError(f"search space: {path!r} {kinds[0]} needs a list" +
                              ("" if kinds[0] == "choice" else " [low, high]"))
    return space


def search_space(recipe_name: str) -> dict:
    if recipe_name not in SEARCH_SPACES:
        raise RecipeError(f"no search space for recipe {recipe_name!r} (built-in spaces: "
                          f"{', '.join(sorted(SEARCH_SPACES))}); pass one with --space FILE.yaml")
    return SEARCH_SPACES[recipe_name]


def load_space(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read search space ({exc.__class__.__name__})") from None
    return validate_space(data)


def check_space_fits(recipe: Recipe, space: dict) -> None:
    """Every end of every range makes a valid recipe, or one :class:`RecipeError` line naming the range: a value
    a recipe refuses would otherwise fail its trial minutes into a study, again and again."""
    for path, spec in validate_space(space).items():
        kind = next(k for k in ("float", "int", "choice") if k in spec)
        for value in spec[kind]:
            try:
                apply_params(recipe, {path: value})
            except RecipeError as exc:
                raise RecipeError(f"search space: {path} = {value!r} does not fit recipe {recipe.name}: {exc}") \
                    from None


def apply_params(recipe: Recipe, params: dict) -> Recipe:
    """The recipe with sampled values written into it (paths as in the space)."""
    top, model_kwargs, augment = {}, dict(recipe.model_kwargs), recipe.augment
    for path, value in params.items():
        head, _, tail = path.partition(".")
        if path == "augment_strength":
            scaled = {f: getattr(REFERENCE_AUGMENT, f) * value for f in _AUGMENT_FIELDS if f != "hflip"}
            augment = dataclasses.replace(augment, **scaled)
        elif head == "model_kwargs":
            model_kwargs[tail] = value
        elif head == "augment":
            augment = dataclasses.replace(augment, **{tail: value})
        else:
            top[path] = value
    return recipe.replace(**top, model_kwargs=model_kwargs, augment=augment)
