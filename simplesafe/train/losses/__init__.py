from simplesafe.train.losses.bradley_terry import bradley_terry_loss, pairwise_accuracy  # noqa: F401
from simplesafe.train.losses.dpo import dpo_loss  # noqa: F401
from simplesafe.train.losses.ppo import (  # noqa: F401
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae_advantages,
    kl_estimate,
    kl_penalized_rewards,
    whiten,
)
