from simplesafe.train.losses.bradley_terry import bradley_terry_loss, pairwise_accuracy  # noqa: F401
from simplesafe.train.losses.dpo import dpo_loss  # noqa: F401
