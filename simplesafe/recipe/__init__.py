"""``simplesafe run RECIPE.yaml``: the stages of a recipe in order, skipping finished ones.

A recipe is one YAML file with a section per stage; ``stages`` lists which to run:

    tiny_model  pretrain the embedded base model (when base_model is embedded:tiny)
    data        curate ELI5-style QA, preference pairs and Simple Wikipedia -> sft/ rm/ rl/ wiki/
    backward    train a backward model M_yx (answer -> question) on the train-split QA pairs,
                as Humpback does (Li et al., 2023), to serve as the question generator
    synth       backtranslate questions for the Simple Wikipedia leads -> more SFT rows
    sft         supervised fine-tuning on data/sft + synth (epochs chosen on validation loss)
    rm          the named reward models (helpfulness, safety, simplicity)
    dpo         DPO from the SFT model on data/rm pairs (LoRA; reference = adapters off)
    merge       careful (NF4-aware) merge of the DPO adapter, compared with the simple merge
    ppo         PPO from the SFT model on data/rl prompts with the composite reward
    grpo        GRPO through TRL with the same reward (optional)
    eval        base vs SFT vs DPO vs PPO on held-out prompts: readability, toxicity,
                ROUGE/BERTScore, win rate against SFT under the offline annotator pool
    harness     Open LLM Leaderboard tasks (lm-evaluation-harness, local task data) for every
                model of the run, and the careful vs simple merge: the report's Table 1 (optional)
    report      one self-contained HTML file

Each stage writes into ``RUN/<stage>/`` with a ``DONE`` marker (see
:mod:`simplesafe.runs`), so an interrupted run continues from the last finished stage
and a finished run re-runs in seconds. Every section is validated before anything runs.

    simplesafe run recipes/demo.yaml
    simplesafe run recipes/demo.yaml sft.epochs=2 --run-dir runs/try2

The package, one idea a module:

    config      RecipeConfig, the config classes of the stages defined here, Context, the stage registry
    stages      the training and data stages and the builders of their configs
    evaluation  the eval stage: model paths, training signals, judges, red-team prompts
    harness     the harness stage (Table 1)
    report      the report stage (one HTML file)
    runner      validate_recipe, run_pipeline, the memory check, timings and the summary
"""

from simplesafe.recipe.config import ALL_STAGES, STAGES, Context, RecipeConfig, register, section
from simplesafe.recipe.evaluation import training_signals
from simplesafe.recipe.runner import (VALIDATORS, check_memory, release_stage_models, resolve_run_dir, run_pipeline,
                                      validate_recipe)

__all__ = ["ALL_STAGES", "STAGES", "VALIDATORS", "Context", "RecipeConfig", "check_memory", "register",
           "release_stage_models", "resolve_run_dir", "run_pipeline", "section", "training_signals", "validate_recipe"]
