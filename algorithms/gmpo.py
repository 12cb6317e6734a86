"""GMPO: Geometric-Mean Policy Optimization.

Paper: Zhao et al., "Geometric-Mean Policy Optimization", 2025,
arXiv:2507.20673.

GRPO maximises the arithmetic mean of the token-level clipped objectives of a
response, which outlier token ratios can dominate. GMPO maximises their
geometric mean: with token log-ratios ℓ_{i,t} = log π_θ(o_{i,t})/π_old(o_{i,t})
clipped one-sidedly in log space (PPO's pessimistic min, sign-aware),

    ℓ̃_{i,t} = min(ℓ_{i,t}, clip(ℓ_{i,t}, −ε_low, ε_high))   if Â_i > 0
              max(ℓ_{i,t}, clip(ℓ_{i,t}, −ε_low, ε_high))   if Â_i ≤ 0
    J(θ)    = 1/G Σ_i Â_i · exp(1/|o_i| Σ_t ℓ̃_{i,t})
            = 1/G Σ_i Â_i · (Π_t clip(ρ_{i,t}))^(1/|o_i|)

Because the geometric mean is robust to outliers, the clip range is much
wider than GRPO's: ratios in (e^−0.4, e^0.4), i.e. ε_low = ε_high = 0.4 in log
space. Advantages are GRPO's group z-score (the official code divides by
std + 1e-8); no KL term (kl_coef = 0).

Unlike GSPO, whose sequence ratio is clipped as a whole, GMPO clips every
token before the geometric mean, so only the out-of-range tokens stop
contributing gradient.

Closest relative: GRPO. For responses of one token, GMPO is GRPO's clipped
surrogate with ε_low^GRPO = 1 − e^−ε_low and ε_high^GRPO = e^ε_high − 1; on-policy
its gradient is REINFORCE's with seq-mean-token-mean weights.

Equivalents: verl `loss_mode=geo_mean`; TRL `trl.experimental.gmpo.GMPOTrainer`
(`epsilon`, `epsilon_high` in log space, default 0.4; KL averaged per
response; plain mean over responses).

Verified against: the official code callsys/GMPO `train_zero_math_gmpo.py`
(`critic_type_modify == "gmpo"`, `--cliprange 0.4` in
`scripts/qwen2.5-math-7b-gmpo.sh`), verl
`verl/trainer/ppo/core_algos.py::compute_policy_loss_geo_mean` and TRL
`trl/experimental/gmpo/gmpo_trainer.py`. The sequence advantage Â_i is read
from the token advantages as their mean over the row's trained tokens.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus):
    clip_eps_low: float = pieces.setting(0.4, ge=0.0)
    """ε_low in log space: token ratios are clipped below at e^−ε_low."""
    clip_eps_high: float = pieces.setting(0.4, ge=0.0)
    """ε_high in log space: token ratios are clipped above at e^ε_high."""
    std_eps: float = pieces.setting(1e-8, gt=0.0)
    """ε_std added to the group std (1e-8 in the official code)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std."""


def advantages(rollout, cfg: Config, state):
    """Â_i: GRPO's group z-score on the trained tokens."""
    return ops.group_advantage(rollout, eps=cfg.std_eps, ddof=cfg.std_ddof), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ): −Â_i times the geometric mean of the clipped token ratios, mean over responses."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    log_ratio = ops.log_ratio(stats.logprobs, rollout.behaviour_logprobs)
    seq_adv = ops.sequence_mean(adv, rollout.loss_mask)
    bounded = jnp.clip(log_ratio, -cfg.clip_eps_low, cfg.clip_eps_high)
    pessimistic = jnp.where(
        seq_adv[:, None] > 0, jnp.minimum(log_ratio, bounded), jnp.maximum(log_ratio, bounded)
    )
    seq_ratio = jnp.exp(ops.sequence_mean(pessimistic, rollout.loss_mask))
    total, metrics = ops.regularised_policy_loss(
        ops.broadcast_to_tokens(-seq_adv * seq_ratio, rollout), stats, rollout, "seq-mean-token-mean",
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    return total, metrics | ops.ratio_metrics(jnp.exp(log_ratio), pessimistic != log_ratio, rollout)


register(Algorithm(
    name="gmpo",
    family="policy-loss",
    paper="Geometric-Mean Policy Optimization (Zhao et al., 2025, arXiv:2507.20673)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps", "std_ddof"),
))
