"""GRPO: Group Relative Policy Optimization.

Paper: Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical
Reasoning in Open Language Models", 2024, arXiv:2402.03300 (section 4.1).

For each prompt q, sample a group of G responses o_1..o_G with rewards
r_1..r_G. The advantage of every token of response i is the group z-score

    Â_{i,t} = (r_i − mean(r)) / (std(r) + ε_std)

and the objective (maximised) is the clipped surrogate with a KL penalty
inside the per-response average:

    J(θ) = 1/G Σ_i 1/|o_i| Σ_t [ min(ρ_{i,t} Â_{i,t}, clip(ρ_{i,t}, 1 − ε, 1 + ε) Â_{i,t})
                                  − β D_KL,t ]
    ρ_{i,t}  = π_θ(o_{i,t} | q, o_{i,<t}) / π_old(o_{i,t} | q, o_{i,<t})
    D_KL,t   = π_ref/π_θ − log(π_ref/π_θ) − 1          (the k3 estimator)

The loss is −J. Paper defaults: ε = 0.2 (`clip_eps_low`; `clip_eps_high`
None keeps the range symmetric), β = 0.04 (`kl_coef`), k3 (`kl_estimator`).
Closest relative: PPO with the critic replaced by the group baseline and KL
moved from the reward into the loss.

Config: the shared `pieces.PolicyLoss` (clip bounds, KL, entropy,
aggregation), `pieces.DualClip` and `pieces.GroupStd`, plus the estimator's
own `scale_rewards` and `std_ddof`. The estimator fields (`scale_rewards`,
`std_eps`, `std_ddof`) are read by `advantages` only, so this loss pairs with
any other estimator (`rlzoo train --algo grpo --advantage bnpo`).

Equivalents: TRL `GRPOTrainer(loss_type="grpo")` (TRL's `beta` is `kl_coef`
here; note TRL's std epsilon 1e-4 and default beta = 0, and that with
beta > 0 TRL 1.16 by default multiplies each token's KL term by the
differentiable token ratio ρ_{i,t} (`use_bias_correction_kl=True`), which
changes the KL gradient even on-policy: that is `kl_importance_weighted=True`
here, off by default as in the paper's objective above); verl
`adv_estimator=grpo`, `loss_mode=vanilla`,
`loss_agg_mode=seq-mean-token-mean`, `use_kl_loss=True`,
`kl_loss_type=low_var_kl`.
"""

from __future__ import annotations

import dataclasses

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.DualClip, pieces.GroupStd):
    kl_coef: float = pieces.setting(0.04, ge=0.0)
    """β: weight of the KL-to-reference term (the paper's 0.04, section 4.1; 0 drops the reference model)."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """How per-token losses are averaged (the paper's objective: 1/G Σ_i 1/|o_i| Σ_t)."""
    scale_rewards: bool = True
    """Divide group-centred rewards by the group std (False gives Dr.GRPO's advantage)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std (1: unbiased, as in TRL and verl)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = (r_i − mean_g r) / (std_g r + ε_std), broadcast to the tokens of row i."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps, ddof=cfg.std_ddof), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ): clipped surrogate plus β·KL per token, then `cfg.aggregation`."""
    eps_low, eps_high = cfg.clip_bounds
    return ops.clipped_policy_loss(
        stats, rollout, adv, cfg.aggregation, eps_low=eps_low, eps_high=eps_high, dual_clip=cfg.dual_clip,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


register(Algorithm(
    name="grpo",
    family="policy-loss",
    paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models (Shao et al., 2024, arXiv:2402.03300)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("scale_rewards", "std_eps", "std_ddof"),
))
