"""CISPO: Clipped IS-weight Policy Optimization.

Paper: MiniMax, "MiniMax-M1: Scaling Test-Time Compute Efficiently with
Lightning Attention", 2025, arXiv:2506.13585, section 3.1.

PPO / GRPO clipping zeroes the gradient of every token whose ratio has left
the trust region; in long reasoning traces those are often rare "fork" tokens
(However, Wait, ...). CISPO clips the importance-sampling weight instead and
stops its gradient, so every token keeps a REINFORCE gradient:

    r_{i,t}  = π_θ(o_{i,t} | q, o_{i,<t}) / π_old(o_{i,t} | q, o_{i,<t})
    r̂_{i,t}  = clip(r_{i,t}, 1 − ε_low^IS, 1 + ε_high^IS)
    J(θ)     = 1/Σ_i|o_i| Σ_i Σ_t sg(r̂_{i,t}) Â_{i,t} log π_θ(o_{i,t} | q, o_{i,<t})
    Â_{i,t}  = (R_i − mean_g R) / std_g R                          (GRPO's advantage)

so ∇J = 1/Σ|o| Σ r̂ Â ∇log π: the unclipped off-policy policy gradient with
its weights truncated, never zeroed. Token-mean aggregation and no KL term.

The paper sets no lower bound (ε_low^IS "set to a large value") and tunes
only ε_high^IS, whose value it does not report. The default ε_high^IS = 4
(weights capped at 5) is ScaleRL's ε_max = 5 (Khatri et al. 2025,
arXiv:2510.13786), the value TRL recommends for `loss_type="cispo"`
[inferred for the M1 paper: no value there].

Closest relative: off-policy REINFORCE with a group baseline. On-policy
(r = 1, inside the bounds) the gradient is REINFORCE's with token-mean
weights; with unbounded clipping it equals the gradient of the unclipped
surrogate −r·Â (because ∇r = r ∇log π), though the loss values differ.

Equivalents: TRL `GRPOTrainer(loss_type="cispo", epsilon_high=1 + ε_high^IS)`
(TRL's `epsilon_high` is the absolute cap on r, with no lower bound; with
beta > 0 TRL 1.16 by default weights the KL term by the unclipped token
ratio r, `kl_importance_weighted=True` here, off by default);
verl `loss_mode=cispo` (`clip_ratio_low/high` as 1 ∓ ε, aggregation from
`loss_agg_mode`).

Verified against: the paper's eq. 4–5 and verl
`verl/trainer/ppo/core_algos.py::compute_policy_loss_cispo`; TRL
`trl/trainer/grpo_trainer.py::_compute_loss` (loss_type "cispo"). The
default: huggingface/trl `trl/trainer/grpo_config.py`, help of
`epsilon_high` (with loss_type "cispo" it is ScaleRL's ε_max, an absolute
cap on r, recommended 5.0, i.e. ε_high^IS = 4 here); the M1 paper's remark
that only ε_high^IS was tuned, with no lower bound, as quoted in
kekmodel/slime `PR_DESCRIPTION.md`. The M1 value itself is not findable
(searched the arXiv page, paper summaries and CISPO implementations).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    eps_low_is: float | None = pieces.setting(None, ge=0.0)
    """ε_low^IS: the weight is clipped below at 1 − ε_low^IS (None: no lower bound, as in the paper)."""
    eps_high_is: float = pieces.setting(4.0, ge=0.0)
    """ε_high^IS: the weight is clipped above at 1 + ε_high^IS (ScaleRL/TRL value; [inferred] for M1)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std."""


def advantages(rollout, cfg: Config, state):
    """Â_i: GRPO's group z-score on the trained tokens."""
    return ops.group_advantage(rollout, eps=cfg.std_eps, ddof=cfg.std_ddof), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ) = −Σ w_t sg(r̂_t) Â_t log π_θ(y_t)."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    low = 0.0 if cfg.eps_low_is is None else 1.0 - cfg.eps_low_is
    weight = jax.lax.stop_gradient(jnp.clip(ratio, low, 1.0 + cfg.eps_high_is))
    total, metrics = ops.reinforce_loss(
        stats, rollout, weight * adv, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    return total, metrics | ops.ratio_metrics(ratio, weight != ratio, rollout)


register(Algorithm(
    name="cispo",
    family="policy-loss",
    paper="MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention (MiniMax, 2025, arXiv:2506.13585)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps", "std_ddof"),
))
