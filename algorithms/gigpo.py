"""GiGPO: Group-in-Group Policy Optimization, for multi-turn agents.

Paper: Lang Feng, Zhenghai Xue, Tingcong Liu and Bo An, "Group-in-Group
Policy Optimization for LLM Agent Training", NeurIPS 2025, arXiv:2505.10978.
Code: https://github.com/langfengQ/verl-agent (`gigpo/core_gigpo.py`).

K episodes of one task form the episode group (as in GRPO). A second,
step-level grouping collects every turn, across those K episodes, that
starts from the same environment state (an "anchor state", Rollout.state_keys),
and compares what happened next:

    A^E_i    = (R_i − mean_g R) / F_norm                       episode level (Eq. 3)
    G_{i,k}  = Σ_{l ≥ k} γ^(l − k) r_{i,l}                      discounted return of turn k (Eq. 5)
    A^S_{i,k} = (G_{i,k} − mean_{S(i,k)} G) / F_norm             step level over the anchor group S (Eq. 7)
    A_{i,t}  = A^E_i + ω · A^S_{i,k(t)}                          on the tokens t of turn k (Eq. 8)

F_norm is the group's standard deviation (+ ε) under `mode="mean_std_norm"`
and 1 under "mean_norm". The loss is GRPO's clipped surrogate on these
advantages (`default_loss="grpo"`).

Details from the official code: a singleton anchor group gets A^S = 0 (its
mean is its own return; its std is taken as 1); the std is unbiased (ddof 1);
the episode-level mean and std are taken over the group's *steps*, each
episode counted once per turn it took (`compute_mean_std_cross_steps=True`,
"more stable" per its docstring), which `episode_stats="turns"` reproduces
("episodes" counts each episode once, the paper's Eq. 3). Anchor states are
grouped only within one task group (`build_step_group` groups by the episode
group first).

Invariants (tests/algorithms/test_gigpo.py): ω = 0 gives GRPO's advantage (for
equal-length episodes under "turns"); A^S sums to zero over every anchor group
under mean_norm; singleton anchor groups get A^S = 0; relabelling the state
keys one-to-one changes nothing; at one turn per episode, every anchor group
is the task group, so A = (1 + ω) · A^E.

Defaults (verl-agent's `examples/gigpo_trainer/run_*.sh`): γ = 0.95, ω = 1,
mode "mean_norm" (also the function's default; the scripts offer
"mean_std_norm" as the alternative), ε = 1e-6, and a KL-to-reference loss
term of weight 0.01 with the low-variance (k3) estimator
(`use_kl_loss=True`, `kl_loss_coef=0.01`, `kl_loss_type=low_var_kl`), which
is GRPO's loss here with `kl_coef` = 0.01.

Equivalents: verl-agent `algorithm.adv_estimator=gigpo`; ms-swift's GIGPO
trainer. TRL and verl proper have no GiGPO.
Verified against: verl-agent's `gigpo/core_gigpo.py`
(`compute_gigpo_outcome_advantage`, `episode_norm_reward`, `build_step_group`,
`step_norm_reward`, `compute_step_discounted_returns`) and its GiGPO run
scripts, read through public copies of those files in other repositories
(the repository itself could not be fetched here; a fork's extra
teacher-reward term is not part of GiGPO and is left out).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    step_advantage_weight: float = pieces.setting(1.0, ge=0.0)
    """ω: weight of the step-level (anchor-state) advantage; 0 is GRPO."""
    gamma: float = pieces.setting(0.95, ge=0.0, le=1.0)
    """γ: discount of the turn rewards in the step-level returns."""
    mode: Literal["mean_std_norm", "mean_norm"] = "mean_norm"
    """F_norm: the group std (+ ε) or 1, at both levels."""
    episode_stats: Literal["turns", "episodes"] = "turns"
    """Episode-level mean / std over the group's turns (each episode weighted by
    its turn count, the official code) or over its episodes (the paper's Eq. 3)."""
    eps: float = pieces.setting(1e-6, gt=0.0)
    """ε added to the std."""


def _episode_advantage(rollout, cfg: Config):
    """A^E [B]: rewards centred (and scaled) within each task group."""
    k = rollout.group_size
    rewards = ops.group_view(rollout.rewards.astype(jnp.float32), k)                      # [G, K]
    weight = (ops.group_view(rollout.num_turns, k).astype(jnp.float32) if cfg.episode_stats == "turns"
              else jnp.ones_like(rewards))
    count = jnp.sum(weight, axis=1, keepdims=True)
    mean = jnp.sum(weight * rewards, axis=1, keepdims=True) / jnp.maximum(count, 1.0)
    adv = rewards - mean
    if cfg.mode == "mean_std_norm":
        var = jnp.sum(weight * jnp.square(rewards - mean), axis=1, keepdims=True) / jnp.maximum(count - 1.0, 1.0)
        adv = adv / (jnp.where(count > 1, jnp.sqrt(var), 1.0) + cfg.eps)
    return adv.reshape(-1)


def advantages(rollout, cfg: Config, state):
    """A_{i,t} = A^E_i + ω A^S_{i,k(t)} on every policy token, 0 elsewhere."""
    valid = ops.turn_valid(rollout.num_turns, rollout.turn_rewards.shape[1])
    returns = ops.discounted_turn_returns(jnp.where(valid, rollout.turn_rewards, 0.0), cfg.gamma)
    step = ops.anchor_group_advantage(returns, rollout.state_keys, valid, rollout.group_size,
                                      scale=cfg.mode == "mean_std_norm", eps=cfg.eps)
    per_turn = _episode_advantage(rollout, cfg)[:, None] + cfg.step_advantage_weight * step
    adv = ops.turn_values_to_tokens(per_turn, rollout.turn_ids)
    return jnp.where(rollout.loss_mask, adv, 0.0), state


register(Algorithm(
    name="gigpo",
    family="advantage",
    paper="Group-in-Group Policy Optimization for LLM Agent Training (Feng, Xue, Liu and An, 2025, arXiv:2505.10978)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"kl_coef": 0.01, "kl_estimator": "k3"},
    needs=frozenset({"turn_ids", "turn_rewards", "state_keys", "num_turns"}),
))
