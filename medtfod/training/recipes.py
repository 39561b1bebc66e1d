"""Named training recipes: measured sets of `RenderOptions` values a user asks for by name
(`config --recipe NAME`) instead of finding them again.

A recipe fills only the options the user left unset: `--recipe cpu-scratch --steps 3000` keeps
the recipe's batch, size and rate and trains 3,000 steps (the schedule and its quarter-length
warm-up follow).
"""
from __future__ import annotations

import dataclasses
from typing import Dict

from ..core.errors import UserError, did_you_mean

# cpu-scratch: SSD-MobileNet V2 FPNLite from scratch on 2 CPU cores, for small medical sets when
# no pretrained weights are reachable. Measured on real DDTI (benchmarks/real_ddti.py, README
# "Real data"): 13 min of training, held-out AP@0.5 0.683 and top-1 mean IoU 0.605 (the issue's
# starting point, batch 8, 256 px and 1,500 steps with the zoo's
# batch-norm decay, reached 0.023 and 0.247). With it,
# render's from-scratch batch-norm decay 0.99 (`models.from_scratch_batch_norm`) applies.
RECIPES: Dict[str, Dict[str, object]] = {
    "cpu-scratch": dict(batch_size=8, image_size=256, steps=1500, learning_rate=0.04),
}
WARMUP_FRACTION = 0.25  # a recipe's warm-up: this share of the steps, whoever set them
RECIPE_MODELS = {"cpu-scratch": ("ssd_mobilenet_v2_fpnlite_320",)}


def apply_recipe(options, model: str):
    """`options` (a `RenderOptions`) with `options.recipe`'s values in the fields left None.

    Raises:
      UserError: an unknown recipe, a model it was not measured for, or a recipe 'scratch' with
        a fine-tune checkpoint.
    """
    name = options.recipe
    if name is None:
        return options
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}{did_you_mean(name, RECIPES)}")
    if model not in RECIPE_MODELS[name]:
        raise UserError(f"recipe {name!r} was measured for {', '.join(RECIPE_MODELS[name])}, not {model}; "
                        "give --batch-size, --steps, --image-size and --learning-rate yourself")
    if name.endswith("scratch") and options.checkpoint:
        raise UserError(f"recipe {name!r} trains from scratch; leave out --checkpoint (fine-tuning wants "
                        "the zoo's schedule: give --steps and --batch-size yourself)")
    filled = {field: value for field, value in RECIPES[name].items() if getattr(options, field) is None}
    if options.warmup_steps is None:
        filled["warmup_steps"] = max(1, int((options.steps or filled["steps"]) * WARMUP_FRACTION))
    return dataclasses.replace(options, **filled)
