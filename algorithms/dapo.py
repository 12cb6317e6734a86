"""DAPO: Decoupled Clip and Dynamic sAmpling Policy Optimization.

Paper: Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at
Scale", 2025, arXiv:2503.14476 (ByteDance Seed / Tsinghua AIR). Not to be
confused with "Direct Advantage Policy Optimization" (a step-level critic method).

GRPO's advantage with four changes to its loss and data:

    R'_i   = R_i + c · R_length(y_i)                               (overlong reward shaping)
    Â_i    = (R'_i − mean_g R') / (std_g R' + ε_std)
    J(θ)   = 1/Σ_i|o_i| Σ_i Σ_t min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high) Â_i)
             s.t. 0 < |{o_i : o_i correct}| < G                    (dynamic sampling)

    R_length(y) = 0                                  |y| ≤ L_max − L_cache
                  ((L_max − L_cache) − |y|) / L_cache  L_max − L_cache < |y| ≤ L_max
                  −1                                 |y| > L_max  (here also: truncated)

1. Clip-Higher: decoupled bounds ε_low = 0.2, ε_high = 0.28.
2. Token-level loss: token-mean over the whole batch (1/Σ|o_i|), not GRPO's
   per-sequence mean.
3. No KL term (kl_coef = 0).
4. Overlong reward shaping with L_max = 20480, L_cache = 4096 tokens
   (`ops.overlong_penalty`); |y| is the number of trained tokens of the row
   (Σ_t loss_mask), and a row flagged `truncated` gets −1.
5. Dynamic sampling: groups whose outcomes are all equal carry no gradient and
   are dropped; the sampler keeps drawing until the batch is full.

Where dynamic sampling lives. `advantages` returns only the advantage, so it
cannot remove rows from the batch. The filter is therefore split in two:
- The record's `group_filter` (`keep_groups`, on when `cfg.dynamic_sampling`)
  marks the groups whose outcome rewards differ. The experience layer draws
  further batches of prompts, up to `--max-sampling-rounds`, until the batch
  is full of kept groups (the paper's outer loop), and the rejected groups
  still in the batch get sample_weight = 0 before `advantages` and before the
  normaliser is frozen (`rlzoo.experience.row_transforms.weigh_out_rejected`),
  so they also leave the token-mean denominator, as in the paper, where the
  batch holds only kept groups.
- `advantages` also sets Â = 0 on those groups. Without shaping, GRPO's z-score
  is already 0 there; with shaping, a group whose rows are all correct but of
  different lengths has non-zero shaped advantages, yet the paper filters on
  accuracy (the unshaped reward), so those rows must not train either. If the
  trainer does not apply the filter, the only difference from the paper is the
  token-mean denominator.

Closest relative: GRPO with kl_coef = 0. With ε_high = ε_low, aggregation
seq-mean-token-mean, no shaping and no filtering, DAPO is GRPO with kl_coef = 0.

Equivalents: TRL `GRPOTrainer(loss_type="dapo", epsilon_high=0.28, beta=0)`
(TRL's default loss; should beta be set > 0, TRL 1.16 by default weights the
KL term by the token ratio, `kl_importance_weighted=True` here, off by
default; its `mask_truncated_completions` is the paper's
"overlong filtering", and `trl.rewards.get_soft_overlong_punishment` the
shaping reward); verl recipe `dapo`: `clip_ratio_low=0.2`,
`clip_ratio_high=0.28`, `loss_agg_mode=token-mean`,
`reward_model.overlong_buffer` (len 4096, penalty_factor 1.0),
`algorithm.filter_groups` (metric acc).

Verified against: the paper (sections 3.1–3.4, eq. 8 and 13) and verl
`docs/algo/dapo.md` (overlong reward min(−(|y| − (L_max − L_cache)) / L_cache · c, 0),
group filtering on the accuracy metric).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    clip_eps_high: float | None = pieces.setting(0.28, ge=0.0)
    """ε_high: upper clip bound 1 + ε_high (the paper's Clip-Higher value)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std."""
    overlong_shaping: bool = True
    """Add the soft overlong punishment to the reward before the group z-score."""
    max_response_length: int = pieces.setting(20480, ge=1)
    """L_max in tokens (the paper: 16384 expected + 4096 buffer)."""
    overlong_buffer: int = pieces.setting(4096, ge=0)
    """L_cache: the punishment grows linearly over the last L_cache tokens before L_max."""
    overlong_penalty_factor: float = pieces.setting(1.0, ge=0.0)
    """c: scale of the overlong punishment (verl `overlong_buffer.penalty_factor`)."""
    dynamic_sampling: bool = True
    """Train only on groups whose rewards differ: refill the batch with them and zero
    the advantage of the rest (see the module docstring)."""


def advantages(rollout, cfg: Config, state):
    """Â_i: group z-score of the shaped reward, 0 on groups with all-equal rewards."""
    rewards = rollout.rewards
    if cfg.overlong_shaping:
        lengths = jnp.sum(rollout.loss_mask, axis=1)
        penalty = ops.overlong_penalty(
            lengths, cfg.max_response_length, cfg.overlong_buffer, rollout.truncated
        )
        rewards = rewards + cfg.overlong_penalty_factor * penalty
    adv = ops.group_zscore(rewards, rollout.group_size, cfg.std_eps, cfg.std_ddof)
    if cfg.dynamic_sampling:
        # The filter looks at the outcome reward, not the shaped one (the paper filters on accuracy).
        adv = jnp.where(ops.degenerate_groups(rollout.rewards, rollout.group_size), 0.0, adv)
    return ops.broadcast_to_tokens(adv, rollout), state


def keep_groups(rollout, cfg: Config):
    """[G] bool: the groups whose outcome rewards differ (None without dynamic sampling)."""
    if not cfg.dynamic_sampling:
        return None
    return ~ops.group_view(ops.degenerate_groups(rollout.rewards, rollout.group_size), rollout.group_size)[:, 0]


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ): asymmetric clipped surrogate, token-mean aggregated."""
    eps_low, eps_high = cfg.clip_bounds
    return ops.clipped_policy_loss(
        stats, rollout, adv, cfg.aggregation, eps_low=eps_low, eps_high=eps_high,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


def needs(cfg: Config) -> frozenset[str]:
    return frozenset({"truncated"} if cfg.overlong_shaping else ())


register(Algorithm(
    name="dapo",
    family="policy-loss",
    paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale (Yu et al., 2025, arXiv:2503.14476)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=needs,
    group_filter=keep_groups,
    estimator_fields=("std_eps", "std_ddof", "overlong_shaping", "max_response_length", "overlong_buffer",
                      "overlong_penalty_factor"),
))
