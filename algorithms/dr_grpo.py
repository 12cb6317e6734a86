"""Dr.GRPO: GRPO Done Right.

Paper: Liu et al., "Understanding R1-Zero-Like Training: A Critical
Perspective", 2025, arXiv:2503.20783 (section 3.2).

GRPO's objective has two biases: the per-response 1/|o_i| favours long wrong
answers and short right ones (length bias), and dividing by std(R) up-weights
prompts that are almost always or almost never solved (difficulty bias).
Dr.GRPO removes both:

    Â_i  = R_i − mean_g R                                   (no std)
    J(θ) = 1/G Σ_i 1/L_gen Σ_t min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 − ε, 1 + ε) Â_i)

where L_gen is a constant (the generation budget), the same for every row, so
each token's weight no longer depends on the length of its response
(aggregation seq-mean-token-sum-norm). Defaults: ε = 0.2 and no KL term (the
paper's Oat-Zero recipe trains with no KL, kl_coef = 0, on rule-based rewards).

Closest relative: GRPO. Dr.GRPO = GRPO with `scale_rewards=False` and
`aggregation="seq-mean-token-sum-norm"`.

Equivalents: TRL `GRPOTrainer(loss_type="dr_grpo", scale_rewards="none")`
(TRL normalises by `max_completion_length`; with beta > 0 TRL 1.16 weights
the KL term by the token ratio by default, `kl_importance_weighted=True`
here, off by default); verl `adv_estimator=grpo`,
`norm_adv_by_std_in_grpo=False`, `loss_agg_mode=seq-mean-token-sum-norm`
(`loss_scale_factor` = the constant).

Verified against: the paper's eq. for Dr.GRPO and the official Oat code
(sail-sg/understand-r1-zero; reproduced in callsys/GMPO
`train_zero_math_gmpo.py`: `masked_sum(..., constant_normalizer=generate_max_length)`
and a group-mean-only Monte-Carlo advantage for `critic_type="drgrpo"`).

The constant here defaults to the rollout's length T (prompt + response
positions); set `norm_len` to the generation budget to match the paper and
TRL exactly when T differs from it.
"""

from __future__ import annotations

import dataclasses

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.RatioClip, pieces.KLPenalty, pieces.EntropyBonus):
    norm_len: int | None = pieces.setting(None, ge=1)
    """L_gen: the constant every row's token sum is divided by (None: the rollout's length T)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = R_i − mean_g R on the trained tokens of row i."""
    return ops.group_advantage(rollout, scale=False), state


def loss(stats, rollout, adv, cfg: Config, state):
    """Clipped surrogate, Σ_t per row / L_gen, mean over rows."""
    eps_low, eps_high = cfg.clip_bounds
    return ops.clipped_policy_loss(
        stats, rollout, adv, "seq-mean-token-sum-norm",
        eps_low=eps_low, eps_high=eps_high, norm_len=cfg.norm_len,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


register(Algorithm(
    name="dr_grpo",
    family="policy-loss",
    paper="Understanding R1-Zero-Like Training: A Critical Perspective (Liu et al., 2025, arXiv:2503.20783)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=(),  # the advantage R − mean_g R reads no setting
))
