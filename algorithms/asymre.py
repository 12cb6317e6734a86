"""AsymRE: Asymmetric REINFORCE, off-policy REINFORCE with a lowered baseline.

Papers: Arnal, Narozniak, Cabannes, Tang, Kempe, Munos, "Asymmetric REINFORCE
for off-Policy Reinforcement Learning: Balancing positive and negative
rewards", 2025, arXiv:2506.20520 (NeurIPS 2025); reinterpreted as a
regularised REINFORCE in Yao et al., "Group-Relative REINFORCE Is Secretly
an Off-Policy Algorithm", 2025, arXiv:2509.24203 (REP family of Trinity-RFT
`examples/rec_gsm8k`).

Off-policy REINFORCE with advantage A = r − V, no importance weights. With
samples from μ ≠ π the baseline V changes the fixed point: V below the
expected reward V^μ emphasises positive samples and gives a policy
improvement guarantee; V above it collapses the policy. AsymRE takes the
group mean lowered by δ:

    V_i = mean_g R − δ,     Â_i = R_i − V_i = (R_i − mean_g R) + δ
    ℓ_t = −Â_i log π_θ(y_t)                          (token-mean)

equivalently group-relative REINFORCE plus −δ log π_θ(y_t), a forward-KL
style term that keeps the behaviour samples likely (the REC paper's reading,
Trinity's regularizer="forward-kl" with coefficient δ). δ = 0.1 is the
official setting (Trinity `baseline_shift` = −0.1). Every group's mean
advantage is δ, so all-equal groups still push their samples up by δ.

Closest relative: `reinforce` with the group-mean baseline (δ = 0,
token-mean). Sibling: `opmd` (proximal k2 penalty).

Equivalents: Trinity-RFT advantage_fn "asymre" (baseline_shift = −δ), or
`algorithm_type: rec` with regularizer "forward-kl"; no verl/TRL loss_mode.

Verified against: Trinity-RFT `trinity/algorithm/advantage_fn/asymre_advantage.py`
(baseline = group mean + baseline_shift, default −0.1; a singleton group gets
baseline 0 there, here its group mean, i.e. Â = δ) and
`trinity/algorithm/policy_loss_fn/rec_policy_loss.py` (regularizer "forward-kl").
"""

from __future__ import annotations

import dataclasses

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    delta: float = 0.1
    """δ: how far the baseline sits below the group mean (Trinity baseline_shift = −δ)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = R_i − (mean_g R − δ) on row i's trained tokens."""
    adv = ops.group_centre(rollout.rewards, rollout.group_size) + cfg.delta
    return ops.broadcast_to_tokens(adv, rollout), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−Â log π_θ(y_t), aggregated (no ratio: off-policy by design)."""
    total, metrics = ops.reinforce_loss(
        stats, rollout, adv, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    return total, metrics | ops.ratio_metrics(ratio, None, rollout)


register(Algorithm(
    name="asymre",
    family="reinforce",
    paper="Asymmetric REINFORCE for off-Policy Reinforcement Learning: Balancing positive and negative rewards (Arnal et al., 2025, arXiv:2506.20520)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("delta",),
))
