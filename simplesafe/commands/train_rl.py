"""``simplesafe train {ppo,grpo,rloo,bon,expiter}``: the reinforcement-learning and sampling trainers."""

from __future__ import annotations

from simplesafe.commands.train import app  # noqa: F401  (commands below register on this app)
