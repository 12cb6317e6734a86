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
3. No KL term (β = 0).
4. Overlong reward shaping with L_max = 20480, L_cache = 4096 tokens
   (`ops.overlong_penalty`); |y| is the number of trained tokens of the row
   (Σ_t loss_mask), and a row flagged `truncated` gets −1.
5. Dynamic sampling: groups whose outcomes are all equal carry no gradient and
   are dropped; the sampler keeps drawing until the batch is full.

Where dynamic sampling lives. `advantages` returns only the advantage, so it
cannot remove rows from the batch. The filter is therefore split in two:
- `rlzoo.ops.drop_degenerate_groups(rollout)` sets sample_weight = 0 on every
  group with all-equal rewards. The trainer calls it (when
  `cfg.dynamic_sampling`) before `advantages` and before freezing the
  normaliser, so the dropped rows also leave the token-mean denominator, as in
  the paper, where the batch holds only kept groups. Re-sampling to refill the
  batch is the trainer's job (the paper's outer loop): it draws further
  batches of prompts, up to `--max-sampling-rounds`, until the batch is full
  of groups whose rewards differ; what is still missing weighs 0.
- `advantages` also sets Â = 0 on those groups. Without shaping, GRPO's z-score
  is already 0 there; with shaping, a group whose rows are all correct but of
  different lengths has non-zero shaped advantages, yet the paper filters on
  accuracy (the unshaped reward), so those rows must not train either. If the
  trainer does not call the helper, the only difference from the paper is the
  token-mean denominator.

Closest relative: GRPO with β = 0. With ε_high = ε_low, aggregation
seq-mean-token-mean, no shaping and no filtering, DAPO is GRPO with β = 0.

Equivalents: TRL `GRPOTrainer(loss_type="dapo", epsilon_high=0.28, beta=0)`
(TRL's default loss; its `mask_truncated_completions` is the paper's
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

from rlzoo import ops
from rlzoo.registry import Algorithm, register, regulariser_needs


@dataclasses.dataclass(frozen=True)
class Config:
    clip_eps_low: float = 0.2
    """ε_low: lower clip bound 1 − ε_low of the token ratio."""
    clip_eps_high: float = 0.28
    """ε_high: upper clip bound 1 + ε_high (Clip-Higher)."""
    aggregation: ops.Aggregation = "token-mean"
    """Token-level loss: 1/Σ_i|o_i| Σ_i Σ_t over the whole batch."""
    beta: float = 0.0
    """KL-to-reference weight; the paper removes the KL term."""
    kl_estimator: ops.KLEstimator = "k3"
    """KL estimator when beta > 0."""
    std_eps: float = 1e-6
    """ε_std added to the group std of the (shaped) rewards."""
    std_ddof: int = 1
    """Delta degrees of freedom of the group std."""
    overlong_shaping: bool = True
    """Add the soft overlong punishment to the reward before the group z-score."""
    max_response_length: int = 20480
    """L_max in tokens (the paper: 16384 expected + 4096 buffer)."""
    overlong_buffer: int = 4096
    """L_cache: the punishment grows linearly over the last L_cache tokens before L_max."""
    overlong_penalty_factor: float = 1.0
    """c: scale of the overlong punishment (verl `overlong_buffer.penalty_factor`)."""
    dynamic_sampling: bool = True
    """Zero the advantage of groups whose rewards are all equal (see the module docstring)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (not in the paper)."""


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


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ): asymmetric clipped surrogate, token-mean aggregated."""
    return ops.clipped_policy_loss(
        stats, rollout, adv, cfg.aggregation,
        eps_low=cfg.clip_eps_low, eps_high=cfg.clip_eps_high,
        kl_coef=cfg.beta, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
    )


def needs(cfg: Config) -> frozenset[str]:
    fields = regulariser_needs(kl_coef=cfg.beta, entropy_coef=cfg.entropy_coef)
    return fields | ({"truncated"} if cfg.overlong_shaping else frozenset())


register(Algorithm(
    name="dapo",
    family="policy-loss",
    paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale (Yu et al., 2025, arXiv:2503.14476)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=needs,
))
