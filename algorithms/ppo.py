"""PPO: Proximal Policy Optimization, with a learned critic and GAE.

Papers: Schulman et al., "Proximal Policy Optimization Algorithms", 2017,
arXiv:1707.06347; GAE from Schulman et al., "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", 2016, arXiv:1506.02438;
the RLHF setting (KL penalty in the reward, γ = 1) from Ouyang et al.,
"Training language models to follow instructions with human feedback",
2022, arXiv:2203.02155. Defaults follow the LLM reproduction of Huang et
al., "The N+ Implementation Details of RLHF with PPO", 2024,
arXiv:2403.17031 (also TRL's `PPOConfig` defaults).

Per-token rewards (the outcome reward on the last trained token unless the
rollout carries `token_rewards`) minus a KL penalty at the behaviour policy:

    r_t = r^task_t − β_KL (log π_old(y_t) − log π_ref(y_t))        (β_KL = kl_coef, k1 estimate)

Advantages by GAE from the sampling-time critic values V_old
(`Rollout.old_values`, 0 when absent), whitened over the batch; `advantages`
returns the targets {"advantages": Â, "returns": R} (the value target is
computed once, outside the gradient, before whitening):

    δ_t = r_t + γ V_old(t+1) − V_old(t),   A_t = δ_t + γλ A_{t+1},   R_t = A_t + V_old(t)
    Â_t = (A_t − mean A) / std A

Clipped surrogate (optionally dual-clipped, Ye et al. 2020,
arXiv:1912.09729) and clipped value loss, token-mean aggregated:

    L_π = −min(ρ_t Â_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â_t)
    L_V = ½ max((V_θ(t) − R_t)², (clip(V_θ(t), V_old(t) − ε_V, V_old(t) + ε_V) − R_t)²)
    L   = L_π + c_V L_V

The value term needs the current critic (`PolicyStats.values`); with
c_V = 0 PPO runs without a critic (V = 0: whitened returns-to-go).

Equivalents: verl `adv_estimator=gae`, `loss_mode=vanilla`; TRL `PPOTrainer`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.DualClip):
    kl_in_loss = False  # the KL penalty is folded into the reward
    gamma: float = pieces.setting(1.0, ge=0.0, le=1.0)
    """γ: discount over tokens."""
    lam: float = pieces.setting(0.95, ge=0.0, le=1.0)
    """λ: GAE trace parameter."""
    kl_coef: float = pieces.setting(0.05, ge=0.0)
    """β_KL: KL-to-reference penalty in the per-token reward, not in the loss
    (0 drops the reference; 0.05 from Huang et al. 2024 / TRL's `PPOConfig.kl_coef`)."""
    kl_estimator: ops.KLEstimator = "k1"
    """Estimator of the per-token reward KL at the behaviour policy
    (k1 = log π_old − log π_ref, as in Ouyang et al. 2022 and TRL's default)."""
    whiten_advantages: bool = True
    """Whiten GAE advantages over the batch."""
    vf_coef: float = pieces.setting(0.1, ge=0.0)
    """c_V: weight of the value loss (0: no critic)."""
    value_clip: float | None = pieces.setting(0.2, ge=0.0)
    """ε_V: clip of the value prediction around V_old (None: unclipped)."""


def advantages(rollout, cfg: Config, state):
    """{"advantages": GAE over trained tokens, whitened over the batch,
    "returns": the value targets R_t = A_t + V_old(t) (before whitening)}."""
    rewards = rollout.token_rewards
    if rewards is None:
        rewards = ops.outcome_token_rewards(rollout)
    rewards = rewards + ops.kl_reward_penalty(rollout, cfg.kl_coef, cfg.kl_estimator)
    values = rollout.old_values if rollout.old_values is not None else jnp.zeros_like(rewards)
    adv, returns = ops.gae(rewards, values, rollout.loss_mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = ops.masked_whiten(adv, ops.weighted_mask(rollout))
    return {"advantages": adv, "returns": returns}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """L_π + c_V L_V, aggregated with `cfg.aggregation`."""
    stats, rollout, returns = ops.loss_inputs(stats, rollout, targets["returns"])
    eps_low, eps_high = cfg.clip_bounds
    total, metrics = ops.clipped_policy_loss(
        stats, rollout, targets["advantages"], cfg.aggregation,
        eps_low=eps_low, eps_high=eps_high, dual_clip=cfg.dual_clip, entropy_coef=cfg.entropy_coef,
    )
    if cfg.vf_coef and stats.values is not None:
        value_loss = jnp.square(stats.values - returns)
        if cfg.value_clip is not None and rollout.old_values is not None:
            clipped_values = rollout.old_values + jnp.clip(
                stats.values - rollout.old_values, -cfg.value_clip, cfg.value_clip
            )
            value_loss = jnp.maximum(value_loss, jnp.square(clipped_values - returns))
        value_loss = 0.5 * ops.aggregate(value_loss, rollout, cfg.aggregation)
        total = total + cfg.vf_coef * value_loss
        metrics["value_loss"] = value_loss
    return total, metrics


register(Algorithm(
    name="ppo",
    family="critic",
    paper="Proximal Policy Optimization Algorithms (Schulman et al., 2017, arXiv:1707.06347)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=lambda cfg: frozenset({"values"} if cfg.vf_coef else ()),
))
