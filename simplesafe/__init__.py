"""simplesafe: train language models to answer questions simply and safely.

Follows the project report "Training LLMs on Simple, Safe Text" (curation of ELI5 and
Simple Wikipedia, SFT, reward models, PPO, DPO, QLoRA careful merge) and the chat-style
instruction-tuning papers it builds on (Self-Instruct, Humpback, LIMA, AlpacaFarm).

Run ``simplesafe --help`` for the command groups.
"""

__version__ = "0.1.0"
