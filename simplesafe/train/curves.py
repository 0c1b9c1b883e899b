"""The reward and KL curves of an RL run (PPO, GRPO, RLOO): one PNG, ``curves.png`` in the stage folder."""

from __future__ import annotations

from pathlib import Path

from simplesafe.atomic import atomic_path


def plot_curves(history: list[dict], path: Path) -> None:
    """Reward (total and per source) and KL per step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(steps, [h["reward"] for h in history], label="reward (score)", linewidth=2)
    for key in sorted(k for k in history[0] if k.startswith("reward/") and k != "reward/total"):
        ax1.plot(steps, [h[key] for h in history], label=key.split("/", 1)[1], alpha=0.7)
    ax1.set_xlabel("PPO step")
    ax1.set_ylabel("mean reward")
    ax1.legend(fontsize=8)
    ax2.plot(steps, [h["kl"] for h in history], color="tab:red", label="KL(policy || reference)")
    ax2.set_xlabel("PPO step")
    ax2.set_ylabel("KL per response (nats)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

