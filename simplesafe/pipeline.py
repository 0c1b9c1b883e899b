"""Compatibility module: the recipe runner (``simplesafe run RECIPE``) is now the package :mod:`simplesafe.recipe`.

``simplesafe.recipe.config`` (RecipeConfig, Context, the stage registry), ``.stages`` (training and data
stages), ``.evaluation`` (the eval stage), ``.harness`` (Table 1), ``.report`` (the HTML report) and ``.runner`` (validate_recipe,
run_pipeline). New code imports from there; this module only re-exports the public names.
"""

from simplesafe.recipe import (ALL_STAGES, STAGES, VALIDATORS, Context, RecipeConfig, check_memory,
                               register, release_stage_models, resolve_run_dir, run_pipeline, section,
                               training_signals, validate_recipe)

__all__ = ["ALL_STAGES", "STAGES", "VALIDATORS", "Context", "RecipeConfig", "check_memory", "register",
           "release_stage_models", "resolve_run_dir", "run_pipeline", "section", "training_signals", "validate_recipe"]
