"""GSPO-token: Group Sequence Policy Optimization with token-level advantages.

Paper: Zheng et al., "Group Sequence Policy Optimization", 2025,
arXiv:2507.18071, section 4.3 ("GSPO-token").

GSPO's sequence ratio s_i = exp(1/|y_i| Σ_t log π_θ(y_{i,t})/π_old(y_{i,t}))
carried to every token with a stop-gradient trick, so that each token can
have its own advantage Â_{i,t} (multi-turn, process rewards):

    s_{i,t}(θ) = sg[s_i(θ)] · π_θ(y_{i,t} | x, y_{i,<t}) / sg[π_θ(y_{i,t} | x, y_{i,<t})]
    J(θ)       = 1/G Σ_i 1/|y_i| Σ_t min(s_{i,t} Â_{i,t}, clip(s_{i,t}, 1 − ε_low, 1 + ε_high) Â_{i,t})

s_{i,t} equals s_i in value (so a response is clipped as a whole when its
advantage is constant), and its gradient is s_i ∇log π_θ(y_{i,t}). With
Â_{i,t} = Â_i the value and the gradient are exactly GSPO's (checked in
tests/algorithms/test_gspo_token.py). Defaults as GSPO: ε_low = 3e-4,
ε_high = 4e-4, no KL (`kl_coef` = 0).

Closest relative: GSPO (`gspo`), of which this is the per-token-advantage
form; with one token per response it is GRPO's token-level clipped surrogate.

Equivalents: verl `loss_mode=gspo` (which is written in this form, with
`seq-mean-token-mean`); TRL's `trl/experimental/gspo_token`
(`importance_sampling_level="sequence_token"`), absent from the installed
TRL 1.16, so no parity test.

Verified against: the paper (eq. 12–13) and verl
`verl/trainer/ppo/core_algos.py::compute_policy_loss_gspo` (log s_{i,t} =
sg[log s_i] + log π − sg[log π]).
"""

from __future__ import annotations

from rlzoo import ops
from rlzoo.algorithms import gspo
from rlzoo.registry import Algorithm, register


# The sequence-level paper's settings and advantages; only the loss is new here.
Config = gspo.Config
advantages = gspo.advantages


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ) with s_{i,t} = sg[s_i] · π_θ / sg[π_θ], seq-mean-token-mean."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    seq_log_ratio = ops.sequence_log_ratio(stats.logprobs, rollout.behaviour_logprobs, rollout.loss_mask)
    ratio = ops.stop_gradient_ratio(seq_log_ratio[:, None], stats.logprobs)
    pg, clipped = ops.clipped_surrogate(ratio, adv, *cfg.clip_bounds)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, "seq-mean-token-mean",
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


register(Algorithm(
    name="gspo_token",
    family="policy-loss",
    paper="Group Sequence Policy Optimization, GSPO-token variant (Zheng et al., 2025, arXiv:2507.18071)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps", "std_ddof"),
))
